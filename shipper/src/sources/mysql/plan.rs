//! Planning a restore: the snapshot to start from and the stored segments after its
//! position, checked to be one unbroken chain from that position to the target.
//!
//! A restore never skips: a break anywhere between the snapshot's position and the target
//! (before the first segment, between two segments, or a chain that ends before the target)
//! stops the plan with an error that names the missing range and what to do instead, before
//! the target server is touched. A break after the target does not matter.

use logferry_common::format::mysql as binlog;
use logferry_common::snapshot::SnapshotManifest;
use logferry_common::{BinlogPos, Position, SegmentHeader, StreamId};

use super::target::Target;
use crate::catalog::{stored_segments, SegmentRef};
use crate::error::{Result, ShipperError};
use crate::listing::rfc3339;
use crate::restore::segment_payload;
use crate::snapshots;
use crate::storage::Store;

/// A stored segment with its header, and the header's positions as binlog positions
/// (read once, when the chain is read).
#[derive(Debug, Clone)]
pub struct ChainSegment {
    /// Where it is stored.
    pub seg: SegmentRef,
    /// Its header.
    pub header: SegmentHeader,
    /// Where it continues the chain: where its first event starts, or on a new leg's
    /// first segment the place of the previous leg it follows.
    pub start: BinlogPos,
    /// Where its first event starts.
    pub events_start: BinlogPos,
    /// Right after its last event.
    pub end: BinlogPos,
    /// Where the transaction still open at its end began, if one is.
    pub open_trx: Option<BinlogPos>,
}

/// What a restore will use.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The snapshot to load first (none for an export from a position).
    pub snapshot: Option<SnapshotManifest>,
    /// Position the replay starts from.
    pub start: BinlogPos,
    /// Segments to read, in chain order, up to the first break after the target.
    pub segments: Vec<ChainSegment>,
    /// A break in the chain after the target (harmless for this restore), for the report.
    pub gap: Option<String>,
    /// The restorable range, for messages.
    pub range: String,
    /// The old branches of the chain's forks: (fork point, where the old branch's stored
    /// chain ended], on the earlier leg. A restore follows the surviving branch and skips
    /// what ends inside one.
    pub orphaned: Vec<(BinlogPos, BinlogPos)>,
}

impl Plan {
    /// Whether the event that ends at `end` is on an old server's branch only: after a
    /// fork point and before the start of the leg that forked there. A restore follows the
    /// surviving branch and skips it (`export --branch` writes such events out).
    pub fn orphaned(&self, end: &BinlogPos) -> bool {
        in_old_branch(&self.orphaned, end)
    }
}

/// The old branches of every fork in `chain` (see [`Plan::orphaned`]).
pub fn old_branches(chain: &[ChainSegment]) -> Vec<(BinlogPos, BinlogPos)> {
    chain
        .iter()
        .filter_map(|c| c.fork_point().map(|at| (at.clone(), c.start.clone())))
        .collect()
}

/// Whether a place is inside one of `branches`.
pub fn in_old_branch(branches: &[(BinlogPos, BinlogPos)], end: &BinlogPos) -> bool {
    branches.iter().any(|(at, to)| on_branch(at, to, end))
}

/// Whether `end` lies on the old branch that runs after the fork point `at` to `to`.
fn on_branch(at: &BinlogPos, to: &BinlogPos, end: &BinlogPos) -> bool {
    end.cmp_place(at).is_gt() && end.cmp_place(to).is_le()
}

impl ChainSegment {
    /// Where the leg this segment starts forked, when it starts one after a fork.
    fn fork_point(&self) -> Option<&BinlogPos> {
        match &self.header.meta.lineage.forks_at {
            Some(Position::Mysql(at)) => Some(at),
            _ => None,
        }
    }

    /// Whether this segment starts a leg after a fork that orphans the event ending at
    /// `end` (see [`Plan::orphaned`]).
    pub fn orphans(&self, end: &BinlogPos) -> bool {
        self.fork_point()
            .is_some_and(|at| on_branch(at, &self.start, end))
    }
}

/// A binlog position inside an old branch names a place the surviving branch never was.
fn refuse_old_branch_target(target: &Target, branches: &[(BinlogPos, BinlogPos)]) -> Result<()> {
    match target {
        Target::BinlogPosition(p) if in_old_branch(branches, p) => {
            Err(ShipperError::Restore(format!(
                "{p} is on the old branch of a fork (see `ls`): restores follow the surviving branch; `export --branch` writes the old branch's transactions"
            )))
        }
        _ => Ok(()),
    }
}

/// Reads every segment header of `stream`, in chain order.
///
/// # Errors
/// When the store fails or a header is corrupt.
pub async fn chain(store: &Store, stream: &StreamId) -> Result<Vec<ChainSegment>> {
    let prefix = logferry_common::keys::segments_prefix(stream);
    let stored = stored_segments(store, &prefix).await?;
    stored
        .into_iter()
        .map(|(seg, header)| {
            let m = &header.meta;
            let mysql = |p: &Position| {
                p.as_mysql().cloned().map_err(|e| {
                    ShipperError::Restore(format!(
                        "{}: {e}; the stream is not a MySQL stream",
                        seg.key
                    ))
                })
            };
            let (start, end) = (mysql(&m.start)?, mysql(&m.end)?);
            let events_start = mysql(m.events_start())?;
            let open_trx = m.open_trx.as_ref().map(mysql).transpose()?;
            Ok(ChainSegment {
                seg,
                header,
                start,
                events_start,
                end,
                open_trx,
            })
        })
        .collect()
}

/// Commit time (ms) of the last event that ends at or before `pos`, read from the chain.
async fn time_at(store: &Store, chain: &[ChainSegment], pos: &BinlogPos) -> Result<Option<i64>> {
    let Some(i) = chain.iter().position(|c| c.end.cmp_place(pos).is_ge()) else {
        return Ok(None);
    };
    let c = &chain[i];
    let start = &c.events_start;
    if start.cmp_place(pos).is_ge() {
        return Ok(if i > 0 {
            Some(chain[i - 1].header.meta.last_event_ms)
        } else {
            None
        });
    }
    let payload = segment_payload(store, &c.seg).await?;
    let mut last = None;
    binlog::walk(start, &payload, |w| {
        if let binlog::Walked::Event { header, end, .. } = w {
            if end.cmp_place(pos).is_gt() {
                return Ok(false);
            }
            last = Some(i64::from(header.timestamp) * 1000);
        }
        Ok(true)
    })?;
    Ok(last)
}

/// Chooses the snapshot and segments for `target`.
///
/// # Errors
/// [`ShipperError::Restore`] naming the restorable range when the target is outside it, or
/// the missing range when the chain breaks between the snapshot and the target.
pub async fn plan(store: &Store, stream: &StreamId, target: &Target) -> Result<Plan> {
    plan_skipping(store, stream, target, &[]).await
}

/// As [`plan`], passing over the snapshots in `skip` (found corrupt while loading): the
/// next older one then serves, with a longer replay.
///
/// # Errors
/// As [`plan`], and [`ShipperError::Restore`] when no snapshot outside `skip` lies at or
/// before the target.
pub async fn plan_skipping(
    store: &Store,
    stream: &StreamId,
    target: &Target,
    skip: &[String],
) -> Result<Plan> {
    let chain = chain(store, stream).await?;
    let snaps = snapshots::list_trusted(store, stream).await?;
    let Some(last) = chain.last() else {
        return Err(ShipperError::Restore(format!(
            "stream {stream} has no stored segments"
        )));
    };
    if snaps.is_empty() {
        return Err(ShipperError::Restore(format!(
            "stream {stream} has no snapshot; take one with `logferry-agent snapshot --config ...`"
        )));
    }
    let mut snap_times = Vec::new();
    for s in &snaps {
        let pos = BinlogPos::parse(&s.position)?;
        let time = time_at(store, &chain, &pos).await?;
        snap_times.push((s, pos, time));
    }
    let orphaned = old_branches(&chain);
    refuse_old_branch_target(target, &orphaned)?;
    // A snapshot taken on an old branch after its fork point holds what the surviving
    // branch does not.
    snap_times.retain(|(_, pos, _)| !in_old_branch(&orphaned, pos));
    if snap_times.is_empty() {
        return Err(ShipperError::Restore(format!(
            "stream {stream} has no snapshot outside the old branches of its forks; take one with `logferry-agent snapshot --config ...`"
        )));
    }
    let end = &last.end;
    let oldest = &snap_times[0];
    let range = format!(
        "restorable range of stream {stream}: {} ({}) .. {} ({})",
        oldest.2.map(rfc3339).unwrap_or_else(|| "?".into()),
        oldest.1,
        rfc3339(last.header.meta.last_event_ms),
        end
    );
    check_inside(target, last, &range)?;
    snap_times.retain(|(s, ..)| !skip.contains(&s.id));
    let chosen = match target {
        Target::Latest => snap_times.last(),
        Target::Time(t) => snap_times
            .iter()
            .rev()
            .find(|(_, _, time)| time.is_some_and(|st| st <= *t)),
        Target::Gtid(g) => snap_times.iter().rev().find(|(_, pos, _)| {
            pos.gtid
                .as_deref()
                .and_then(|st| g.seq_in(st))
                .is_some_and(|n| n < g.seq)
        }),
        Target::BinlogPosition(p) => snap_times
            .iter()
            .rev()
            .find(|(_, pos, _)| pos.cmp_place(p).is_le()),
    };
    let Some((snap, start, _)) = chosen else {
        if !skip.is_empty() {
            return Err(ShipperError::Restore(format!(
                "no usable snapshot lies at or before the target: {} found corrupt, none older serves; {range}",
                skip.join(", ")
            )));
        }
        return Err(ShipperError::Restore(format!(
            "the target is before the oldest snapshot; {range}"
        )));
    };
    let from = format!("snapshot {}'s position", snap.id);
    let (segments, gap) = follow_chain(&chain, start, &from, target)?;
    Ok(Plan {
        snapshot: Some((*snap).clone()),
        start: start.clone(),
        segments,
        gap,
        range,
        orphaned,
    })
}

/// A plan without snapshot: the chain from `from` on to `target` (for export, and for the
/// drill, which adds the snapshot it loads).
///
/// # Errors
/// [`ShipperError::Restore`] when `from` or the target is not inside the stored chain, or
/// the chain breaks between them.
pub async fn plan_from(
    store: &Store,
    stream: &StreamId,
    from: &BinlogPos,
    target: &Target,
) -> Result<Plan> {
    let chain = chain(store, stream).await?;
    let (Some(first), Some(last)) = (chain.first(), chain.last()) else {
        return Err(ShipperError::Restore(format!(
            "stream {stream} has no stored segments"
        )));
    };
    let range = format!(
        "stored chain of {stream}: {} .. {}",
        first.header.meta.start, last.header.meta.end
    );
    let inside = first.start.cmp_place(from).is_le() && last.end.cmp_place(from).is_ge();
    if !inside {
        return Err(ShipperError::Restore(format!(
            "--from {from} is outside the {range}"
        )));
    }
    check_inside(target, last, &range)?;
    let orphaned = old_branches(&chain);
    refuse_old_branch_target(target, &orphaned)?;
    let (segments, gap) = follow_chain(&chain, from, &format!("--from {from}"), target)?;
    Ok(Plan {
        snapshot: None,
        start: from.clone(),
        segments,
        gap,
        range,
        orphaned,
    })
}

/// The target must not lie after the end of what is stored whole: the chain's end, or,
/// when the chain ends inside a transaction, that transaction's start.
fn check_inside(target: &Target, last: &ChainSegment, range: &str) -> Result<()> {
    let m = &last.header.meta;
    let end = &last.end;
    // A time at the last stored second may be the open transaction's commit time too.
    let open_at_last_second = m
        .open_trx
        .is_some()
        .then_some(m.last_event_ms)
        .filter(|last| matches!(target, Target::Time(t) if t >= last));
    if let Some(last_ms) = open_at_last_second {
        return Err(ShipperError::Gap(format!(
            "the stored chain ends inside a transaction whose commit is not stored yet, at {} \
             ({}); a target at or after that second may include it: give an earlier time; {range}",
            m.end,
            rfc3339(last_ms)
        )));
    }
    match target {
        Target::Latest => Ok(()),
        Target::Time(t) if *t > m.last_event_ms => Err(ShipperError::Gap(format!(
            "{} is after the last stored event: nothing is stored after {} ({}); {range}",
            rfc3339(*t),
            m.end,
            rfc3339(m.last_event_ms)
        ))),
        Target::BinlogPosition(p) if p.cmp_place(end).is_gt() => Err(ShipperError::Gap(format!(
            "{p} is after the end of the stored chain: nothing is stored from {} to {p}; {range}",
            m.end
        ))),
        Target::Gtid(g) => {
            // The GTID state after the last whole transaction: at the end, or where the
            // transaction still open at the end began.
            let state = match &last.open_trx {
                Some(t) => t.gtid.as_deref(),
                None => end.gtid.as_deref(),
            };
            if state.and_then(|st| g.seq_in(st)).is_none_or(|n| n < g.seq) {
                return Err(ShipperError::Gap(format!(
                    "GTID {g} is after the end of the stored chain ({}); {range}",
                    m.end
                )));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// A break in the stored chain: nothing is stored from `from` to `to`.
struct Break {
    /// Where the stored events stop.
    from: BinlogPos,
    /// What ends there: a segment key, or the snapshot's (or `--from`) position.
    from_what: String,
    /// Where the next stored segment starts.
    to: BinlogPos,
    /// That segment's key.
    to_key: String,
}

impl Break {
    fn describe(&self) -> String {
        format!(
            "nothing is stored from {} ({}) to {} (start of {})",
            self.from, self.from_what, self.to, self.to_key
        )
    }
}

/// The segments that hold events after `start`, checked to run unbroken from `start` to the
/// target. A break before the target is an error; one after it ends the list.
fn follow_chain(
    chain: &[ChainSegment],
    start: &BinlogPos,
    start_what: &str,
    target: &Target,
) -> Result<(Vec<ChainSegment>, Option<String>)> {
    let mut out: Vec<ChainSegment> = Vec::new();
    for c in chain.iter().filter(|c| c.end.cmp_place(start).is_gt()) {
        let c_start = &c.start;
        let brk = match out.last() {
            None if c_start.cmp_place(start).is_gt() => Some(Break {
                from: start.clone(),
                from_what: start_what.to_owned(),
                to: c_start.clone(),
                to_key: c.seg.key.clone(),
            }),
            Some(prev) if prev.end != c.start => Some(Break {
                from: prev.end.clone(),
                from_what: format!("end of {}", prev.seg.key),
                to: c_start.clone(),
                to_key: c.seg.key.clone(),
            }),
            _ => None,
        };
        if let Some(brk) = brk {
            if reached_before(target, start, &out, &brk) {
                return Ok((
                    out,
                    Some(format!(
                        "the chain has a gap after the target: {}",
                        brk.describe()
                    )),
                ));
            }
            return Err(gap_error(target, &brk));
        }
        out.push(c.clone());
    }
    Ok((out, None))
}

/// Whether everything a restore to `target` applies lies before the break, so the break
/// does not matter. Conservative: commit times have one-second resolution, so a time target
/// is safe only when a stored event before the break is later than it.
fn reached_before(target: &Target, start: &BinlogPos, kept: &[ChainSegment], brk: &Break) -> bool {
    match target {
        Target::Latest => false,
        Target::Time(t) => kept
            .last()
            .is_some_and(|c| c.header.meta.last_event_ms > *t),
        Target::BinlogPosition(p) => p.cmp_place(&brk.from).is_le(),
        Target::Gtid(g) => kept
            .iter()
            .rev()
            .find_map(|c| c.open_trx.as_ref().unwrap_or(&c.end).gtid.clone())
            .or_else(|| start.gtid.clone())
            .and_then(|state| g.seq_in(&state))
            .is_some_and(|n| n >= g.seq),
    }
}

fn gap_error(target: &Target, brk: &Break) -> ShipperError {
    let target = match target {
        Target::Latest => "the latest stored transaction".to_owned(),
        Target::Time(t) => rfc3339(*t),
        Target::BinlogPosition(p) => p.to_string(),
        Target::Gtid(g) => format!("GTID {g}"),
    };
    ShipperError::Gap(format!(
        "the stored chain has a gap before the target ({target}): {}. A restore across it would \
         miss those events, so nothing was applied. Instead: restore to a point before the gap \
         (--to {}), restore from a snapshot taken after the gap (take one with \
         `logferry-agent snapshot`), or `export --to {}` to get everything up to the gap; \
         `logferry-shipper verify` lists every gap",
        brk.describe(),
        brk.from,
        brk.from
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use logferry_common::{Compression, Segment, SegmentMeta, SourceKind};

    fn seg(from: u64, to: u64, last_ms: i64) -> ChainSegment {
        let meta = SegmentMeta {
            stream: StreamId::new("s").unwrap(),
            source: SourceKind::Mysql,
            start: Position::Mysql(at(from)),
            end: Position::Mysql(at(to)),
            open_trx: None,
            first_event_ms: last_ms - 10,
            last_event_ms: last_ms,
            event_count: 1,
            lineage: logferry_common::segment::Lineage::default(),
        };
        let header = Segment::seal(meta, b"x", Compression::None).unwrap().header;
        ChainSegment {
            seg: SegmentRef {
                key: format!("k{from}"),
                start_key: String::new(),
                end_key: String::new(),
                size: 1,
            },
            header,
            start: at(from),
            events_start: at(from),
            end: at(to),
            open_trx: None,
        }
    }

    fn at(o: u64) -> BinlogPos {
        BinlogPos::new("b.000001", o).unwrap()
    }

    #[test]
    fn a_missing_segment_right_after_the_snapshot_is_a_gap() {
        let chain = [seg(4, 100, 1_000), seg(300, 400, 3_000)];
        let err = follow_chain(&chain, &at(150), "snapshot 1's position", &Target::Latest)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("from b.000001:150 (snapshot 1's position) to b.000001:300"),
            "{err}"
        );
        assert!(err.contains("--to b.000001:150"), "{err}");
    }

    #[test]
    fn a_gap_before_the_target_is_an_error_and_one_after_it_is_not() {
        let chain = [
            seg(4, 100, 1_000),
            seg(100, 200, 2_000),
            seg(300, 400, 3_000),
        ];
        for target in [
            Target::Latest,
            Target::Time(2_000),
            Target::BinlogPosition(at(350)),
        ] {
            let err = follow_chain(&chain, &at(4), "s", &target)
                .err()
                .unwrap()
                .to_string();
            assert!(
                err.contains("from b.000001:200 (end of k100) to b.000001:300"),
                "{err}"
            );
        }
        for target in [Target::Time(1_999), Target::BinlogPosition(at(200))] {
            let (kept, gap) = follow_chain(&chain, &at(4), "s", &target).unwrap();
            assert_eq!(kept.len(), 2, "{target:?}");
            assert!(gap.is_some());
        }
        let (kept, gap) = follow_chain(&chain[..2], &at(50), "s", &Target::Latest).unwrap();
        assert_eq!(kept.len(), 2);
        assert!(gap.is_none());
    }
}

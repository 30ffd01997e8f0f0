//! Planning a Redis restore: the snapshot to start from and the stored segments after its
//! position, checked to be one unbroken run of one history up to the target.
//!
//! A full resync starts a new history: the chain breaks there, and only a snapshot of the
//! new history (the full sync's RDB) restores past it. A break between the snapshot's
//! position and the target stops the plan before the target server is touched.

use logferry_common::format::redis::payload::advance;
use logferry_common::format::redis::{walk, ReplPos};
use logferry_common::snapshot::SnapshotManifest;
use logferry_common::{SegmentHeader, StreamId};

use super::target::Target;
use crate::catalog::{stored_segments, SegmentRef};
use crate::error::{Result, ShipperError};
use crate::listing::rfc3339;
use crate::restore::segment_payload;
use crate::snapshots;
use crate::storage::Store;

/// A stored segment with its header and its positions as replication positions.
#[derive(Debug, Clone)]
pub struct ChainSegment {
    /// Where it is stored.
    pub seg: SegmentRef,
    /// Its header.
    pub header: SegmentHeader,
    /// Where its first command starts.
    pub start: ReplPos,
    /// Right after its last command.
    pub end: ReplPos,
}

/// What a restore will use.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The snapshot to load first (none for an export from a position).
    pub snapshot: Option<SnapshotManifest>,
    /// Position the replay starts from.
    pub start: ReplPos,
    /// Segments to read, in chain order, up to the first break after the target.
    pub segments: Vec<ChainSegment>,
    /// A break in the chain after the target (harmless for this restore), for the report.
    pub gap: Option<String>,
    /// The first segment starts inside a transaction (the one before it ends inside one).
    pub starts_in_trx: bool,
    /// Where the start's history forked (a replica promoted while behind continued it only
    /// up to here): the replay stops there, the commands after it being the old primary's
    /// only.
    pub fork: Option<ReplPos>,
}

impl Plan {
    /// Payload bytes of the plan's segments: the unit of the replay's progress bar.
    pub fn payload_bytes(&self) -> u64 {
        self.segments.iter().map(|c| c.header.payload_len).sum()
    }
}

/// Whether `first` starts inside a transaction: the stored segment that ends where it
/// starts ends inside one.
pub(super) fn starts_in_trx(chain: &[ChainSegment], first: Option<&ChainSegment>) -> bool {
    first.is_some_and(|f| {
        chain
            .iter()
            .any(|c| c.end == f.start && c.header.meta.open_trx.is_some())
    })
}

/// Reads every segment header of `stream`, in chain order.
///
/// # Errors
/// When the store fails, a header is corrupt, or a segment is not of a Redis stream.
pub async fn chain(store: &Store, stream: &StreamId) -> Result<Vec<ChainSegment>> {
    let prefix = logferry_common::keys::segments_prefix(stream);
    stored_segments(store, &prefix)
        .await?
        .into_iter()
        .map(|(seg, header)| {
            let redis = |p: &logferry_common::Position| {
                p.as_redis().cloned().map_err(|e| {
                    ShipperError::Restore(format!(
                        "{}: {e}; the stream is not a Redis stream",
                        seg.key
                    ))
                })
            };
            let (start, end) = (redis(&header.meta.start)?, redis(&header.meta.end)?);
            Ok(ChainSegment {
                seg,
                header,
                start,
                end,
            })
        })
        .collect()
}

/// A snapshot's position in the chain, and the time a restore to which it serves from: the
/// receive time (to the second) of the last command at or before its position in its
/// history, else (a full sync's snapshot, which starts its history) when it was taken.
async fn snapshot_place(
    store: &Store,
    chain: &[ChainSegment],
    m: &SnapshotManifest,
) -> Result<(ReplPos, i64)> {
    let pos = m.position()?.as_redis()?.clone();
    let Some(i) = chain
        .iter()
        .position(|c| c.end.history == pos.history && c.end.offset >= pos.offset)
    else {
        return Ok((pos, m.taken_at_ms));
    };
    let c = &chain[i];
    if c.start.offset >= pos.offset || c.start.history != pos.history {
        let before = i
            .checked_sub(1)
            .map(|j| &chain[j])
            .filter(|p| p.end == c.start && p.end.history == pos.history);
        return Ok((
            pos,
            before.map_or(m.taken_at_ms, |p| p.header.meta.last_event_ms),
        ));
    }
    let payload = segment_payload(store, &c.seg).await?;
    let mut offset = c.start.offset;
    let mut last = c.header.meta.first_event_ms.div_euclid(1000) * 1000;
    walk(&payload, |cmd| {
        offset = advance(offset, &cmd)?;
        if offset > pos.offset {
            return Ok(false);
        }
        if let Some(ts) = cmd.ts {
            last = ts * 1000;
        }
        Ok(true)
    })?;
    Ok((pos, last))
}

/// Chooses the snapshot and segments for `target`, passing over the snapshots in `skip`
/// (found corrupt while loading).
///
/// # Errors
/// [`ShipperError::Restore`] naming the restorable range when the target is outside it;
/// [`ShipperError::Gap`] naming the missing range when the chain breaks between the
/// snapshot and the target.
pub async fn plan(
    store: &Store,
    stream: &StreamId,
    target: &Target,
    skip: &[String],
) -> Result<Plan> {
    let chain = chain(store, stream).await?;
    let snaps = snapshots::list_trusted(store, stream).await?;
    if snaps.is_empty() {
        return Err(ShipperError::Restore(format!(
            "stream {stream} has no snapshot (the agent stores the full sync's RDB when it first connects); \
             a restore needs one"
        )));
    }
    let mut places = Vec::new();
    for s in &snaps {
        let (pos, time) = snapshot_place(store, &chain, s).await?;
        places.push((s, pos, time));
    }
    let oldest = &places[0];
    let range = match chain.last() {
        Some(last) => format!(
            "restorable range of stream {stream}: {} ({}) .. {} ({})",
            rfc3339(oldest.2),
            oldest.1,
            rfc3339(last.header.meta.last_event_ms),
            last.end
        ),
        None => format!(
            "stream {stream} holds snapshots and no segments yet: {} ({})",
            rfc3339(oldest.2),
            oldest.1
        ),
    };
    check_inside(target, chain.last(), &range)?;
    places.retain(|(s, ..)| !skip.contains(&s.id));
    // A snapshot the old primary took after the fork point holds its branch only: it serves
    // no restore.
    let forks = forks(&chain);
    places.retain(|(_, pos, _)| {
        !forks
            .iter()
            .any(|f| f.history == pos.history && pos.offset > f.offset)
    });
    let chosen = match target {
        Target::Latest => places.last(),
        Target::Time(t) => places.iter().rev().find(|(_, _, time)| time <= t),
        Target::Position(p) => places
            .iter()
            .rev()
            .find(|(_, pos, _)| pos.history == p.history && pos.offset <= p.offset),
    };
    let Some((snap, start, _)) = chosen else {
        if !skip.is_empty() {
            return Err(ShipperError::Restore(format!(
                "no usable snapshot lies at or before the target: {} found corrupt, none older serves; {range}",
                skip.join(", ")
            )));
        }
        return Err(ShipperError::Restore(format!(
            "no snapshot lies at or before the target (a position must name the history of a snapshot); {range}"
        )));
    };
    // Latest is past every fork: its snapshot lies on the surviving history.
    let fork = fork_after(&chain, start).filter(|_| !matches!(target, Target::Latest));
    if let (Some(f), Target::Position(p)) = (&fork, target) {
        if p.history == f.history && p.offset > f.offset {
            return Err(ShipperError::Restore(format!(
                "{p} lies on the old primary's branch: the stream forked at {f} (a replica promoted while behind continued it); \
                 restore to {f} or earlier, or to a place after the promoted server's snapshot; export --from {f} --to {p} writes the old branch's commands"
            )));
        }
    }
    let from = format!("snapshot {}'s position", snap.id);
    let (segments, gap) = follow_chain(&chain, start, &from, target, fork.as_ref())?;
    Ok(Plan {
        snapshot: Some((*snap).clone()),
        start: start.clone(),
        starts_in_trx: starts_in_trx(&chain, segments.first()),
        segments,
        gap,
        fork,
    })
}

/// What `export --branch N` answers for a Redis stream: the commands of history `N − 1`
/// after the fork point that began history `N` are written by an export between the two
/// places, which the error names (or says there was no such fork).
///
/// # Errors
/// When the store fails; otherwise always the error naming the export.
pub async fn old_branch(store: &Store, stream: &StreamId, history: u32) -> Result<ShipperError> {
    let chain = chain(store, stream).await?;
    let fork = chain
        .iter()
        .filter(|c| c.start.history == history)
        .find_map(|c| c.header.meta.lineage.forks_at.as_ref()?.as_redis().ok());
    let Some(f) = fork else {
        return Ok(ShipperError::Restore(format!(
            "history {history} of Redis stream {stream} did not begin with a fork (`logferry-shipper ls` shows forks as \"new history … after a FORK\")"
        )));
    };
    let old_end = chain
        .iter()
        .rev()
        .find(|c| c.end.history == f.history)
        .map_or_else(|| f.clone(), |c| c.end.clone());
    Ok(ShipperError::Restore(format!(
        "Redis stream {stream} forked at {f}; the old primary's commands after it run to {old_end}: write them with \
         logferry-shipper export --stream {stream} --from {f} --to {old_end} --dir DIR (an AOF of those commands only)"
    )))
}

/// Every fork point the chain records (each on the history that forked).
fn forks(chain: &[ChainSegment]) -> Vec<ReplPos> {
    chain
        .iter()
        .filter_map(|c| c.header.meta.lineage.forks_at.as_ref()?.as_redis().ok())
        .cloned()
        .collect()
}

/// The fork point of `start`'s history, when the stream forked there.
fn fork_after(chain: &[ChainSegment], start: &ReplPos) -> Option<ReplPos> {
    forks(chain)
        .into_iter()
        .find(|f| f.history == start.history)
}

/// A plan from a position without a snapshot (`export --from`), or from a given snapshot
/// (the drill).
///
/// # Errors
/// As [`plan`]; [`ShipperError::Restore`] when `from` is outside the stored chain.
pub async fn plan_from(
    store: &Store,
    stream: &StreamId,
    from: &ReplPos,
    snapshot: Option<SnapshotManifest>,
    target: &Target,
) -> Result<Plan> {
    let chain = chain(store, stream).await?;
    let inside = chain.iter().any(|c| {
        c.start.history == from.history
            && c.start.offset <= from.offset
            && c.end.offset >= from.offset
    });
    if !inside && snapshot.is_none() {
        return Err(ShipperError::Restore(format!(
            "--from {from} is outside the stored chain of {stream}; `logferry-shipper ls` shows its segments"
        )));
    }
    check_inside(target, chain.last(), &format!("stream {stream}"))?;
    let (segments, gap) = follow_chain(&chain, from, &format!("{from}"), target, None)?;
    Ok(Plan {
        snapshot,
        start: from.clone(),
        starts_in_trx: starts_in_trx(&chain, segments.first()),
        segments,
        gap,
        fork: None,
    })
}

/// The target must not lie after the end of what is stored whole.
fn check_inside(target: &Target, last: Option<&ChainSegment>, range: &str) -> Result<()> {
    let Some(last) = last else {
        return match target {
            Target::Latest => Ok(()),
            _ => Err(ShipperError::Gap(format!(
                "no commands are stored yet, only snapshots: restore --to latest; {range}"
            ))),
        };
    };
    let m = &last.header.meta;
    match target {
        Target::Time(t) if m.open_trx.is_some() && *t >= m.last_event_ms => {
            Err(ShipperError::Gap(format!(
                "the stored chain ends inside a transaction whose EXEC is not stored yet, at {} ({}); \
                 give an earlier time; {range}",
                m.end,
                rfc3339(m.last_event_ms)
            )))
        }
        Target::Time(t) if *t > m.last_event_ms => Err(ShipperError::Gap(format!(
            "{} is after the last stored command: nothing is stored after {} ({}); {range}",
            rfc3339(*t),
            m.end,
            rfc3339(m.last_event_ms)
        ))),
        Target::Position(p) if p.cmp_place(&last.end).is_gt() => Err(ShipperError::Gap(format!(
            "{p} is after the end of the stored chain: nothing is stored from {} to {p}; {range}",
            m.end
        ))),
        _ => Ok(()),
    }
}

/// The segments that hold commands after `start`, checked to run unbroken from `start` to
/// the target. A break before the target is an error; one after it (or after the fork point
/// `stops`, where the replay ends) ends the list.
fn follow_chain(
    chain: &[ChainSegment],
    start: &ReplPos,
    start_what: &str,
    target: &Target,
    stops: Option<&ReplPos>,
) -> Result<(Vec<ChainSegment>, Option<String>)> {
    let mut out: Vec<ChainSegment> = Vec::new();
    let after = |c: &&ChainSegment| {
        c.end.history > start.history
            || (c.end.history == start.history && c.end.offset > start.offset)
    };
    for c in chain.iter().filter(after) {
        let (from, from_what) = match out.last() {
            None => (start.clone(), start_what.to_owned()),
            Some(prev) => (prev.end.clone(), format!("end of {}", prev.seg.key)),
        };
        let joined = match out.last() {
            None => c.start.history == start.history && c.start.offset <= start.offset,
            Some(prev) => prev.end == c.start,
        };
        if !joined {
            let what = format!(
                "nothing is stored from {from} ({from_what}) to {} (start of {}){}",
                c.start,
                c.seg.key,
                if c.start.history != from.history {
                    ": the server answered a full resync there (its backlog no longer held the stream)"
                } else {
                    ""
                }
            );
            if let Some(f) = stops.filter(|f| f.cmp_place(&from).is_le()) {
                return Ok((
                    out,
                    Some(format!(
                        "the stream forked at {f}: the promoted server's history is stored from its snapshot on, after {what}; the state between is the one at the fork"
                    )),
                ));
            }
            if reached_before(target, &out, &from) {
                return Ok((
                    out,
                    Some(format!("the chain breaks after the target: {what}")),
                ));
            }
            return Err(ShipperError::Gap(format!(
                "the stored chain breaks before the target: {what}. A restore across it would miss those \
                 commands, so nothing was applied. Instead: restore to a point before the break \
                 (--to {from}), or to a point after the snapshot that follows it; \
                 `logferry-shipper verify` lists every break"
            )));
        }
        out.push(c.clone());
    }
    Ok((out, None))
}

/// Whether everything a restore to `target` applies lies before a break at `brk`.
/// Conservative: receive times have one-second resolution, so a time target is safe only
/// when a stored command before the break is later than it.
fn reached_before(target: &Target, kept: &[ChainSegment], brk: &ReplPos) -> bool {
    match target {
        Target::Latest => false,
        Target::Time(t) => kept
            .last()
            .is_some_and(|c| c.header.meta.last_event_ms > *t),
        Target::Position(p) => p.cmp_place(brk).is_le(),
    }
}

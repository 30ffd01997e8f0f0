//! `export --branch N`: the transactions only an old server's branch holds. When leg `N`
//! began after a fork (its server had missed the last transactions the previous leg
//! stored), the previous leg's events after the fork point are on the old server's branch:
//! restores skip them. Some of them the new server replicated before it was promoted and
//! sent again at the start of its leg; the rest exist only in the store. Those are written
//! as binlog files (one per original file, as an export) so an operator can decide to
//! apply them, and listed with their GTIDs and commit times.

use std::collections::HashSet;
use std::path::Path;

use logferry_common::format::mysql::{
    self as binlog, code, event_body, ExportFiles, Gtid, PayloadBuilder, TrxTracker, Walked,
};
use logferry_common::{BinlogPos, Position, StreamId};

use super::plan::{self, ChainSegment};
use crate::error::{Result, ShipperError};
use crate::restore::segment_payload;
use crate::storage::Store;

/// One transaction of an old branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BranchTrx {
    /// Its GTID.
    pub gtid: Gtid,
    /// Its commit time, ms since the epoch.
    pub commit_ms: i64,
    /// Whether the new leg holds it too (its server had replicated it).
    pub on_new_leg: bool,
    /// Whether the old branch holds it whole (the old server's chain may end inside one).
    pub complete: bool,
}

/// What `export --branch` found and wrote.
#[derive(Debug, Clone)]
pub struct Branch {
    /// The leg that forked.
    pub leg: u32,
    /// Where its history continues on the previous leg.
    pub forks_at: BinlogPos,
    /// Where the previous leg's stored chain ended.
    pub old_end: BinlogPos,
    /// The old branch's transactions after the fork point, in order.
    pub transactions: Vec<BranchTrx>,
    /// Files written (only the transactions the new leg lacks).
    pub files: Vec<String>,
}

impl Branch {
    /// The whole transactions only the old branch holds: what is written.
    pub fn orphaned(&self) -> impl Iterator<Item = &BranchTrx> {
        self.transactions
            .iter()
            .filter(|t| !t.on_new_leg && t.complete)
    }
}

/// Writes the transactions only the branch that leg `leg` forked from holds into `dir`.
///
/// # Errors
/// [`ShipperError::Restore`] when leg `leg` did not begin with a fork; store and payload
/// errors.
pub async fn export(store: &Store, stream: &StreamId, leg: u32, dir: &Path) -> Result<Branch> {
    let chain = plan::chain(store, stream).await?;
    let i = chain
        .iter()
        .position(|c| c.header.meta.lineage.leg_start.is_some() && c.events_start.leg() == leg)
        .ok_or_else(|| {
            ShipperError::Restore(format!("stream {stream} has no leg {leg} (see `ls`)"))
        })?;
    let fork = &chain[i];
    let Some(Position::Mysql(forks_at)) = fork.header.meta.lineage.forks_at.clone() else {
        return Err(ShipperError::Restore(format!(
            "leg {leg} of {stream} continues the chain's end {}: there was no fork, nothing is on another branch only",
            fork.start
        )));
    };
    let old: Vec<&ChainSegment> = chain[..i]
        .iter()
        .filter(|c| c.end.cmp_place(&forks_at).is_gt())
        .collect();
    let mut transactions: Vec<BranchTrx> = Vec::new();
    let mut trx = TrxTracker::default();
    for c in &old {
        let payload = segment_payload(store, &c.seg).await?;
        binlog::walk(&c.events_start, &payload, |w| {
            if let Walked::Event {
                bytes,
                header,
                end,
                crc32,
            } = w
            {
                if !fork.orphans(end) {
                    return Ok(true);
                }
                let body = event_body(bytes, crc32);
                if header.event_type == code::MARIADB_GTID {
                    if let Some(g) = Gtid::of_event(header.server_id, body) {
                        transactions.push(BranchTrx {
                            gtid: g,
                            commit_ms: i64::from(header.timestamp) * 1000,
                            on_new_leg: false,
                            complete: false,
                        });
                    }
                }
                if trx.after(header.event_type, body) {
                    if let Some(t) = transactions.last_mut() {
                        t.complete = true;
                    }
                }
            }
            Ok(true)
        })?;
    }
    let on_old: HashSet<(u32, u32, u64)> = transactions
        .iter()
        .map(|t| (t.gtid.domain, t.gtid.server, t.gtid.seq))
        .collect();
    let resent = resent_on_new_leg(store, &chain[i..], &on_old).await?;
    for t in &mut transactions {
        t.on_new_leg = resent.contains(&(t.gtid.domain, t.gtid.server, t.gtid.seq));
    }
    let keep: HashSet<(u32, u32, u64)> = transactions
        .iter()
        .filter(|t| t.complete && !t.on_new_leg)
        .map(|t| (t.gtid.domain, t.gtid.server, t.gtid.seq))
        .collect();
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(crate::restore::write_error(dir))?;
    let mut files = ExportFiles::default();
    let mut written = Vec::new();
    for c in &old {
        let payload = segment_payload(store, &c.seg).await?;
        let mut kept = PayloadBuilder::default();
        let mut from: Option<BinlogPos> = None;
        let mut at = c.events_start.clone();
        let mut keeping = false;
        binlog::walk(&c.events_start, &payload, |w| {
            match w {
                Walked::Format(fde) => kept.push_format(fde),
                Walked::Event {
                    bytes,
                    header,
                    end,
                    crc32,
                } => {
                    let start = std::mem::replace(&mut at, end.clone());
                    if header.event_type == code::MARIADB_GTID {
                        keeping = fork.orphans(end)
                            && Gtid::of_event(header.server_id, event_body(bytes, crc32))
                                .is_some_and(|g| keep.contains(&(g.domain, g.server, g.seq)));
                    }
                    if keeping && fork.orphans(end) {
                        from.get_or_insert(start);
                        kept.push_event(bytes);
                    }
                }
            }
            Ok(true)
        })?;
        if let Some(from) = from {
            files.push_segment(&from, &kept.take())?;
        }
    }
    for (name, bytes) in files.finish() {
        let path = dir.join(&name);
        tokio::fs::write(&path, bytes)
            .await
            .map_err(crate::restore::write_error(&path))?;
        written.push(name);
    }
    Ok(Branch {
        leg,
        forks_at,
        old_end: fork.start.clone(),
        transactions,
        files: written,
    })
}

/// The GTIDs of `on_old` that the new leg (`new`, from its first segment) sent again: its
/// server replicated them before it was promoted, so they come first on its leg.
async fn resent_on_new_leg(
    store: &Store,
    new: &[ChainSegment],
    on_old: &HashSet<(u32, u32, u64)>,
) -> Result<HashSet<(u32, u32, u64)>> {
    let mut resent = HashSet::new();
    for c in new {
        let payload = segment_payload(store, &c.seg).await?;
        let mut past = false;
        binlog::walk(&c.events_start, &payload, |w| {
            if let Walked::Event {
                bytes,
                header,
                crc32,
                ..
            } = w
            {
                if header.event_type == code::MARIADB_GTID {
                    match Gtid::of_event(header.server_id, event_body(bytes, crc32)) {
                        Some(g) if on_old.contains(&(g.domain, g.server, g.seq)) => {
                            resent.insert((g.domain, g.server, g.seq));
                        }
                        _ => {
                            past = true;
                            return Ok(false);
                        }
                    }
                }
            }
            Ok(true)
        })?;
        if past {
            break;
        }
    }
    Ok(resent)
}

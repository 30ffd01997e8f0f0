//! Point-in-time restore and export, from the object store alone (no shipper running).
//!
//! 1. [`plan`]: the newest complete snapshot at or before the target, and the stored segments
//!    that follow its primary position, checked for gaps.
//! 2. [`load_snapshot`] loads the snapshot into the target server ([`export_snapshot`]
//!    writes it to a directory instead).
//! 3. [`collect`]: the events after the snapshot's position up to the last transaction that
//!    ends at or before the target, whole transactions only, rebuilt as binlog file pieces
//!    and handed on segment by segment as each is verified; [`crate::replay`] streams them
//!    into the server through the stock `mariadb-binlog | mariadb`, or into files.

use std::path::Path;
use std::process::Stdio;
use std::str::FromStr;
use std::time::Duration;

use indicatif::ProgressBar;
use logferry_common::binlog::{self, ExportFiles, PayloadBuilder, Walked};
use logferry_common::snapshot::{chunk_key, open_chunk, SnapshotManifest};
use logferry_common::trx::{event_body, TrxTracker};
use logferry_common::{BinlogPos, DecodeLimits, Position, Segment, SegmentHeader, StreamId};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::catalog::{stored_segments, SegmentRef};
use crate::error::{Result, ShipperError};
use crate::listing::rfc3339;
use crate::replay::Piece;
use crate::snapshots;
use crate::storage::Store;
use crate::target_server::{finish, TargetServer};

/// Where to restore to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The end of the stored chain.
    Latest,
    /// The last transaction committed at or before this time (ms since the epoch).
    Time(i64),
    /// The last transaction that ends at or before this binlog position.
    Position(BinlogPos),
    /// Up to and including the transaction with this MariaDB GTID.
    Gtid(Gtid),
}

/// A MariaDB GTID `domain-server-sequence`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gtid {
    /// Replication domain.
    pub domain: u32,
    /// Originating server id.
    pub server: u32,
    /// Sequence number.
    pub seq: u64,
}

impl Gtid {
    fn parse(s: &str) -> Option<Gtid> {
        let mut it = s.split('-');
        let g = Gtid {
            domain: it.next()?.parse().ok()?,
            server: it.next()?.parse().ok()?,
            seq: it.next()?.parse().ok()?,
        };
        it.next().is_none().then_some(g)
    }

    /// The sequence number this state holds for the GTID's domain (`D-S-N,...` text).
    fn seq_in(&self, state: &str) -> Option<u64> {
        state
            .split(',')
            .filter_map(|p| Gtid::parse(p.trim()))
            .find(|g| g.domain == self.domain)
            .map(|g| g.seq)
    }

    /// Whether a GTID event (its header's server id and body) is this GTID.
    fn is_event(&self, server_id: u32, body: &[u8]) -> bool {
        let (Some(seq), Some(domain)) = (body.get(0..8), body.get(8..12)) else {
            return false;
        };
        let seq = u64::from_le_bytes(seq.try_into().unwrap_or([0; 8]));
        let domain = u32::from_le_bytes(domain.try_into().unwrap_or([0; 4]));
        (domain, server_id, seq) == (self.domain, self.server, self.seq)
    }
}

impl std::fmt::Display for Gtid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}-{}", self.domain, self.server, self.seq)
    }
}

impl FromStr for Target {
    type Err = ShipperError;

    fn from_str(s: &str) -> Result<Self> {
        if s == "latest" {
            return Ok(Target::Latest);
        }
        if let Some(g) = Gtid::parse(s) {
            return Ok(Target::Gtid(g));
        }
        if let Ok(t) = humantime::parse_rfc3339_weak(s.trim_end_matches('Z')) {
            let ms = t
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0);
            return Ok(Target::Time(ms));
        }
        BinlogPos::parse(s).map(Target::Position).map_err(|_| {
            ShipperError::Restore(format!(
                "--to {s:?}: give an RFC 3339 UTC time (2026-11-23T12:00:00Z), a binlog position \
                 (mysql-bin.000003:1234), a MariaDB GTID (0-1-500) or \"latest\""
            ))
        })
    }
}

/// A stored segment with its header.
#[derive(Debug, Clone)]
pub struct ChainSegment {
    /// Where it is stored.
    pub seg: SegmentRef,
    /// Its header.
    pub header: SegmentHeader,
}

/// What a restore will use.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The snapshot to load first (none for an export from a position).
    pub snapshot: Option<SnapshotManifest>,
    /// Position the replay starts from.
    pub start: BinlogPos,
    /// Segments to read, in chain order, up to the first gap.
    pub segments: Vec<ChainSegment>,
    /// The reason the chain stops early, if it has a gap before the target.
    pub gap: Option<String>,
    /// The restorable range, for messages.
    pub range: String,
}

/// Reads every segment header of `stream`, in chain order.
///
/// # Errors
/// When the store fails or a header is corrupt.
pub async fn chain(store: &Store, stream: &StreamId) -> Result<Vec<ChainSegment>> {
    let prefix = logferry_common::keys::segments_prefix(stream);
    let stored = stored_segments(store, &prefix).await?;
    Ok(stored
        .into_iter()
        .map(|(seg, header)| ChainSegment { seg, header })
        .collect())
}

fn binlog_pos(p: &Position) -> &BinlogPos {
    match p {
        Position::Binlog(b) => b,
    }
}

async fn segment_payload(store: &Store, seg: &SegmentRef) -> Result<Vec<u8>> {
    let bytes = store.get(&seg.key).await?;
    let segment = Segment::decode(bytes, &DecodeLimits::default()).map_err(|e| {
        ShipperError::Restore(format!(
            "{} is corrupt: {e}; run logferry-shipper verify",
            seg.key
        ))
    })?;
    Ok(segment.payload()?)
}

/// Commit time (ms) of the last event that ends at or before `pos`, read from the chain.
async fn time_at(store: &Store, chain: &[ChainSegment], pos: &BinlogPos) -> Result<Option<i64>> {
    let Some(i) = chain
        .iter()
        .position(|c| binlog_pos(&c.header.meta.end).cmp_place(pos).is_ge())
    else {
        return Ok(None);
    };
    let c = &chain[i];
    let start = binlog_pos(&c.header.meta.start);
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
        if let Walked::Event { header, end, .. } = w {
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
/// [`ShipperError::Restore`] naming the restorable range when the target is outside it.
pub async fn plan(store: &Store, stream: &StreamId, target: &Target) -> Result<Plan> {
    let chain = chain(store, stream).await?;
    let snaps = snapshots::list(store, stream).await?;
    let (Some(first), Some(last)) = (chain.first(), chain.last()) else {
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
    let end = binlog_pos(&last.header.meta.end);
    let oldest = &snap_times[0];
    let range = format!(
        "restorable range of stream {stream}: {} ({}) .. {} ({})",
        oldest.2.map(rfc3339).unwrap_or_else(|| "?".into()),
        oldest.1,
        rfc3339(last.header.meta.last_event_ms),
        end
    );
    let chosen = match target {
        Target::Latest => snap_times.last(),
        Target::Time(t) => {
            if *t > last.header.meta.last_event_ms {
                return Err(ShipperError::Restore(format!(
                    "{} is after the last stored event; {range}",
                    rfc3339(*t)
                )));
            }
            snap_times
                .iter()
                .rev()
                .find(|(_, _, time)| time.is_some_and(|st| st <= *t))
        }
        Target::Gtid(g) => {
            let last_seq = end.gtid.as_deref().and_then(|st| g.seq_in(st));
            if last_seq.is_none_or(|n| n < g.seq) {
                return Err(ShipperError::Restore(format!(
                    "GTID {g} is after the end of the stored chain ({}); {range}",
                    last.header.meta.end
                )));
            }
            snap_times.iter().rev().find(|(_, pos, _)| {
                pos.gtid
                    .as_deref()
                    .and_then(|st| g.seq_in(st))
                    .is_some_and(|n| n < g.seq)
            })
        }
        Target::Position(p) => {
            if p.cmp_place(end).is_gt() {
                return Err(ShipperError::Restore(format!(
                    "{p} is after the end of the stored chain; {range}"
                )));
            }
            snap_times
                .iter()
                .rev()
                .find(|(_, pos, _)| pos.cmp_place(p).is_le())
        }
    };
    let Some((snap, start, _)) = chosen else {
        return Err(ShipperError::Restore(format!(
            "the target is before the oldest snapshot; {range}"
        )));
    };
    if binlog_pos(&first.header.meta.start)
        .cmp_place(start)
        .is_gt()
    {
        return Err(ShipperError::Restore(format!(
            "the stored chain starts at {} after the snapshot's position {start}; {range}",
            first.header.meta.start
        )));
    }
    let (segments, gap) = follow_chain(&chain, start);
    Ok(Plan {
        snapshot: Some((*snap).clone()),
        start: start.clone(),
        segments,
        gap,
        range,
    })
}

/// A plan without snapshot: the chain from `from` on (for export).
///
/// # Errors
/// [`ShipperError::Restore`] when `from` is not inside the stored chain.
pub async fn plan_from(store: &Store, stream: &StreamId, from: &BinlogPos) -> Result<Plan> {
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
    let inside = binlog_pos(&first.header.meta.start).cmp_place(from).is_le()
        && binlog_pos(&last.header.meta.end).cmp_place(from).is_ge();
    if !inside {
        return Err(ShipperError::Restore(format!(
            "--from {from} is outside the {range}"
        )));
    }
    let (segments, gap) = follow_chain(&chain, from);
    Ok(Plan {
        snapshot: None,
        start: from.clone(),
        segments,
        gap,
        range,
    })
}

/// Segments that hold events after `start`, up to the first break in the chain.
fn follow_chain(chain: &[ChainSegment], start: &BinlogPos) -> (Vec<ChainSegment>, Option<String>) {
    let mut out: Vec<ChainSegment> = Vec::new();
    for c in chain
        .iter()
        .filter(|c| binlog_pos(&c.header.meta.end).cmp_place(start).is_gt())
    {
        if let Some(prev) = out.last() {
            if !prev.header.meta.end.same_place(&c.header.meta.start) {
                let gap = format!(
                    "the chain has a gap: {} ends at {} but the next stored segment {} starts at {}",
                    prev.seg.key, prev.header.meta.end, c.seg.key, c.header.meta.start
                );
                return (out, Some(gap));
            }
        }
        out.push(c.clone());
    }
    (out, None)
}

/// What [`collect`] handed on so far.
#[derive(Debug, Default)]
pub struct Collected {
    /// Names of the binlog files the kept events came from, in order.
    pub files: Vec<String>,
    /// Events included.
    pub events: u64,
    /// Transactions (and standalone statements) included.
    pub transactions: u64,
    /// Position after the last included event.
    pub last_position: Option<BinlogPos>,
    /// Commit time of the last included event, ms.
    pub last_time_ms: Option<i64>,
    /// Segments read and verified.
    pub segments_verified: u64,
    /// The replay stopped because the next transaction ends after the target.
    pub reached_target: bool,
    /// The transaction of a GTID target was included.
    pub passed_gtid: bool,
}

/// Reads the plan's segments (verifying each) and keeps whole transactions after
/// `plan.start` that end at or before `target`, sending them to `pieces` as binlog file
/// pieces after each segment, so that applying overlaps with reading and memory holds a
/// few segments whatever the size of the restore. `out` tells what was handed on, also
/// when an error stops the collection half-way.
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
    let mut trx = TrxTracker::default();
    let mut done = false;
    for c in &plan.segments {
        if done {
            break;
        }
        let payload = segment_payload(store, &c.seg).await?;
        out.segments_verified += 1;
        bar.inc(c.seg.size);
        let seg_start = binlog_pos(&c.header.meta.start);
        let mut kept = PayloadBuilder::default();
        let mut kept_from: Option<String> = None;
        let mut pending = PayloadBuilder::default();
        let mut pending_file: Option<String> = None;
        let mut pending_events = 0u64;
        let mut file = seg_start.file.clone();
        let mut is_target_trx = false;
        binlog::walk(seg_start, &payload, |w| {
            match w {
                Walked::Format(fde) => kept.push_format(fde),
                Walked::Event {
                    bytes,
                    header,
                    end,
                    crc32,
                } => {
                    let event_file = std::mem::replace(&mut file, end.file.clone());
                    if end.cmp_place(&plan.start).is_le() {
                        return Ok(true);
                    }
                    pending_file.get_or_insert(event_file);
                    pending.push_event(bytes);
                    pending_events += 1;
                    let body = event_body(bytes, crc32);
                    if let Target::Gtid(g) = target {
                        if header.event_type == logferry_common::trx::code::MARIADB_GTID
                            && g.is_event(header.server_id, body)
                        {
                            is_target_trx = true;
                        }
                    }
                    if trx.after(header.event_type, body) {
                        let within = match target {
                            Target::Latest => true,
                            Target::Time(t) => i64::from(header.timestamp) * 1000 <= *t,
                            Target::Position(p) => end.cmp_place(p).is_le(),
                            Target::Gtid(_) => !out.passed_gtid,
                        };
                        if !within {
                            done = true;
                            out.reached_target = true;
                            return Ok(false);
                        }
                        if kept_from.is_none() {
                            kept_from = pending_file.take();
                        }
                        kept.push_raw(&pending.take());
                        pending_file = None;
                        out.events += pending_events;
                        out.transactions += 1;
                        pending_events = 0;
                        out.last_position = Some(end.clone());
                        out.passed_gtid |= std::mem::take(&mut is_target_trx);
                        out.last_time_ms = Some(i64::from(header.timestamp) * 1000);
                    }
                }
            }
            Ok(true)
        })?;
        if let Some(from) = kept_from {
            export.push_segment(&from, &kept.take())?;
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
        if plan.gap.is_none() {
            return Err(ShipperError::Restore(format!(
                "GTID {g} is not in the stored chain after {}; {}",
                plan.start, plan.range
            )));
        }
    }
    out.reached_target |= out.passed_gtid;
    Ok(())
}

/// Streams the snapshot's chunks (each verified) into `out`.
async fn snapshot_chunks<W>(
    store: &Store,
    m: &SnapshotManifest,
    bar: &ProgressBar,
    out: &mut W,
    what: &str,
) -> Result<()>
where
    W: tokio::io::AsyncWrite + Unpin,
{
    for c in &m.chunks {
        let stored = store.get(&chunk_key(&m.stream, &m.id, c.index)).await?;
        let plain = open_chunk(&stored, c)?;
        out.write_all(&plain)
            .await
            .map_err(|e| ShipperError::Restore(format!("{what}: {e}")))?;
        bar.inc(plain.len() as u64);
    }
    Ok(())
}

/// Loads the plan's snapshot (each chunk verified) into `server`; nothing without one.
///
/// # Errors
/// When the client fails or a chunk is corrupt.
pub async fn load_snapshot(
    store: &Store,
    plan: &Plan,
    server: &TargetServer,
    bar: &ProgressBar,
) -> Result<()> {
    let Some(m) = &plan.snapshot else {
        return Ok(());
    };
    let mut child = server
        .client()
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| ShipperError::Restore(format!("cannot run the mariadb client: {e}")))?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| ShipperError::Restore("mariadb has no stdin".into()))?;
    let fed = snapshot_chunks(store, m, bar, &mut stdin, "loading the snapshot").await;
    drop(stdin);
    let loaded = finish(child, "loading the snapshot with mariadb").await;
    loaded?;
    fed
}

/// Writes the plan's snapshot as SQL into `dir` (fsynced); returns the file name, or
/// `None` without a snapshot.
///
/// # Errors
/// When the directory cannot be written or a chunk is corrupt.
pub async fn export_snapshot(
    store: &Store,
    plan: &Plan,
    dir: &Path,
    bar: &ProgressBar,
) -> Result<Option<String>> {
    let Some(m) = &plan.snapshot else {
        return Ok(None);
    };
    let io = write_error(dir);
    tokio::fs::create_dir_all(dir).await.map_err(&io)?;
    let name = format!("snapshot-{}.sql", m.id);
    let mut f = tokio::fs::File::create(dir.join(&name))
        .await
        .map_err(&io)?;
    snapshot_chunks(store, m, bar, &mut f, "writing the snapshot").await?;
    f.sync_all().await.map_err(&io)?;
    Ok(Some(name))
}

/// Writes `RESTORE.txt` into `dir`: how to apply the exported files with the stock clients.
///
/// # Errors
/// When the file cannot be written.
pub async fn write_howto(dir: &Path, plan: &Plan, collected: &Collected) -> Result<()> {
    let mut howto = String::from("# Restore by hand with the stock clients:\n");
    if let Some(m) = &plan.snapshot {
        howto.push_str(&format!(
            "mariadb --host=HOST --user=USER -p < snapshot-{}.sql\n",
            m.id
        ));
    }
    if !collected.files.is_empty() {
        // One file per invocation: the first file may start mid-file without the GTID list
        // that mariadb-binlog's multi-file GTID check expects (or use --skip-gtid-strict-mode).
        howto.push_str(&format!(
            "for f in {}; do mariadb-binlog \"$f\" | mariadb --host=HOST --user=USER -p || break; done\n",
            collected.files.join(" ")
        ));
    }
    tokio::fs::write(dir.join("RESTORE.txt"), howto)
        .await
        .map_err(write_error(dir))
}

/// The error of a failed write into the export directory `dir`.
pub(crate) fn write_error(dir: &Path) -> impl Fn(std::io::Error) -> ShipperError + '_ {
    move |e| ShipperError::Restore(format!("writing into {}: {e}", dir.display()))
}

/// Elapsed time in a short human form.
pub fn elapsed(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        assert_eq!("latest".parse::<Target>().unwrap(), Target::Latest);
        assert_eq!(
            "1970-01-01T00:00:01Z".parse::<Target>().unwrap(),
            Target::Time(1000)
        );
        assert_eq!(
            "1970-01-01T00:00:01.250Z".parse::<Target>().unwrap(),
            Target::Time(1250)
        );
        assert!(matches!(
            "mysql-bin.000002:120".parse::<Target>().unwrap(),
            Target::Position(_)
        ));
        let err = "yesterday".parse::<Target>().unwrap_err().to_string();
        assert!(err.contains("RFC 3339"), "{err}");
    }
}

//! The durable spool: sealed segments on local disk until the shipper acknowledges them,
//! and the checkpoint of the last acknowledged position.
//!
//! Invariants:
//! 1. A file `segments/*.lfs` is whole: it is written as `*.tmp`, fsynced, renamed, and the
//!    directory fsynced. Leftover `*.tmp` files (a crash mid-write) are removed at open.
//! 2. `acked <= spooled`: the checkpoint names the end of the last segment the shipper
//!    acknowledged; every spooled segment starts at or after it. The checkpoint is written
//!    (atomically, fsynced) before the acknowledged file is deleted.
//! 3. After a crash the source resumes at the end of the newest spooled segment, else at the
//!    checkpoint; the spool is shipped first, oldest first. Both name the transaction open
//!    at that end, if any ([`ResumePoint`]).
//! 4. A file damaged on disk is moved to `quarantine/` and every newer file is deleted (it
//!    follows a hole, so it cannot be shipped first): the range from the checkpoint on is
//!    then read again from the source. The rule holds across a crash: at open, spooled
//!    files after the first break in the chain that starts at the checkpoint are deleted.
//!
//! The newest segments written (within a byte budget) are also kept in memory, so that the ship loop, usually
//! one segment behind the sealing, uploads them without reading the file back and hashing
//! it again; older ones (the shipper was away) are read from disk and checked.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use logferry_common::keys::{parse_segment_file_name, segment_file_name, SEGMENT_EXT};
use logferry_common::wire::{Limits, WireTrxMark};
use logferry_common::{DecodeLimits, Position, Segment, SourceKind, TrxMark};

use crate::resume::ResumePoint;
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::error::{AgentError, Result};

/// Segments kept in memory after they are written, for the ship loop to upload without
/// reading them back: the newest ones while all together stay within this many bytes (two
/// zstd segments of the default size, one lz4 segment, no uncompressed one). Bounded so that
/// memory does not grow with the lag or the segment size.
const RECENT_BYTES: usize = 4 << 20;

/// A spooled segment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolEntry {
    /// Full path of the file.
    pub path: PathBuf,
    /// File name (`<start>-<end>.lfs`).
    pub name: String,
    /// Size in bytes.
    pub len: u64,
    /// When it was written, ms since the Unix epoch (0 if the file system does not say).
    pub written_ms: i64,
}

#[derive(Serialize, Deserialize)]
struct Checkpoint {
    kind: SourceKind,
    end: String,
    /// Where the transaction open at `end` began (absent in checkpoints of older builds,
    /// whose segments always ended at a boundary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    open_trx: Option<String>,
    /// The server the last acknowledged segment came from (absent in older checkpoints).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    origin: String,
    /// The chain's last whole transaction (absent in older checkpoints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_trx: Option<WireTrxMark>,
}

/// The spool directory.
#[derive(Debug)]
pub struct Spool {
    segments: PathBuf,
    quarantine: PathBuf,
    checkpoint: PathBuf,
    /// The shipper's limits as last agreed.
    limits: PathBuf,
    /// Key capsules (`<epoch>.json`) of the epochs spooled segments are sealed under.
    capsules: PathBuf,
    bytes: AtomicU64,
    /// The open lock file: held (flock) for the spool's life, so that a second agent on
    /// the same directory is refused.
    _lock: File,
    /// The newest segments written by this process, by file name, oldest first.
    recent: Mutex<VecDeque<(String, Segment)>>,
}

impl Spool {
    /// Opens (creating) the spool under `dir`, locked for this process, and removes
    /// half-written files.
    ///
    /// # Errors
    /// [`AgentError::SpoolInUse`] when another process holds the directory (a second agent
    /// with the same config); [`AgentError::Spool`] when it cannot be created or read.
    pub fn open(dir: &Path) -> Result<Self> {
        let segments = dir.join("segments");
        let quarantine = dir.join("quarantine");
        let capsules = dir.join("keys");
        for d in [dir, &segments, &quarantine, &capsules] {
            fs::create_dir_all(d).map_err(|e| AgentError::spool(d, e))?;
        }
        let lock = lock_dir(dir)?;
        let spool = Spool {
            _lock: lock,
            checkpoint: dir.join("checkpoint.json"),
            limits: dir.join("limits.json"),
            capsules,
            segments,
            quarantine,
            bytes: AtomicU64::new(0),
            recent: Mutex::new(VecDeque::new()),
        };
        for entry in
            fs::read_dir(&spool.segments).map_err(|e| AgentError::spool(&spool.segments, e))?
        {
            let path = entry
                .map_err(|e| AgentError::spool(&spool.segments, e))?
                .path();
            if path.extension().is_some_and(|x| x == "tmp") {
                fs::remove_file(&path).map_err(|e| AgentError::spool(&path, e))?;
            }
        }
        let total = spool.list()?.iter().map(|e| e.len).sum();
        spool.bytes.store(total, Ordering::Relaxed);
        spool.drop_after_break()?;
        // A checkpoint of an older build, not yet whole sectors, is padded while there is
        // room, so that a full disk can later overwrite it in place.
        if let Ok(Some(cp)) = spool.checkpoint() {
            let unpadded =
                fs::metadata(&spool.checkpoint).is_ok_and(|m| m.len() % SECTOR as u64 != 0);
            if unpadded {
                let _ = spool.write_checkpoint(&cp);
            }
        }
        Ok(spool)
    }

    /// Writes a sealed segment durably (invariant 1) and keeps it in memory for
    /// [`Self::read`] while it is one of the newest.
    ///
    /// # Errors
    /// [`AgentError::Spool`] on any I/O failure; nothing half-written is left visible.
    pub fn write(&self, seg: Segment) -> Result<SpoolEntry> {
        let m = &seg.header.meta;
        let name = segment_file_name(&m.start.sort_key(), &m.end.sort_key());
        let path = self.segments.join(&name);
        write_atomically(&path, seg.bytes(), "spool-segment-before-fsync")?;
        let len = seg.bytes().len() as u64;
        let written_ms = fs::metadata(&path).map_or(0, |m| modified_ms(&m));
        self.bytes.fetch_add(len, Ordering::Relaxed);
        if let Ok(mut recent) = self.recent.lock() {
            recent.push_back((name.clone(), seg));
            let (mut total, mut keep) = (0, 0);
            for (_, s) in recent.iter().rev() {
                total += s.bytes().len();
                if total > RECENT_BYTES {
                    break;
                }
                keep += 1;
            }
            let older = recent.len() - keep;
            recent.drain(..older);
        }
        Ok(SpoolEntry {
            path,
            name,
            len,
            written_ms,
        })
    }

    /// Spooled segments, oldest first.
    ///
    /// # Errors
    /// [`AgentError::Spool`] when the directory cannot be read.
    pub fn list(&self) -> Result<Vec<SpoolEntry>> {
        let mut out = Vec::new();
        let dir = &self.segments;
        for entry in fs::read_dir(dir).map_err(|e| AgentError::spool(dir, e))? {
            let entry = entry.map_err(|e| AgentError::spool(dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.ends_with(&format!(".{SEGMENT_EXT}"))
                || parse_segment_file_name(&name).is_err()
            {
                continue;
            }
            let meta = entry
                .metadata()
                .map_err(|e| AgentError::spool(entry.path(), e))?;
            let written_ms = modified_ms(&meta);
            let len = meta.len();
            out.push(SpoolEntry {
                path: entry.path(),
                name,
                len,
                written_ms,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// A spooled segment: the in-memory copy if this process wrote it recently (handed out
    /// once), else the file, read and checked against its trailer sha256, which covers every
    /// byte. A corrupt file is moved to `quarantine/`.
    ///
    /// # Errors
    /// [`AgentError::Spool`] on I/O failure, [`AgentError::SpoolCorrupt`] on bad content.
    pub fn read(&self, entry: &SpoolEntry) -> Result<Segment> {
        if let Ok(mut recent) = self.recent.lock() {
            if let Some(i) = recent.iter().position(|(name, _)| *name == entry.name) {
                if let Some((_, seg)) = recent.remove(i) {
                    return Ok(seg);
                }
            }
        }
        let bytes = fs::read(&entry.path).map_err(|e| AgentError::spool(&entry.path, e))?;
        // The trailer sha256 covers every byte of the file, so decoding detects any damage on
        // disk; the payload itself was hashed when sealed and is checked again by the shipper.
        // Whatever limit this agent sealed to, it is within what a store may hold.
        match Segment::decode(bytes, &DecodeLimits::stored()) {
            Ok(seg) => Ok(seg),
            Err(e) => {
                let to = self.quarantine_from(entry)?;
                Err(AgentError::SpoolCorrupt {
                    path: to,
                    reason: e.to_string(),
                })
            }
        }
    }

    /// Deletes the spooled files after the first break in the chain that starts at the
    /// checkpoint (left by a crash after a damaged file was set aside but before the files
    /// after it were deleted): they follow a hole and are read again from the source.
    /// Files that end at the checkpoint (acknowledged, not yet deleted) are kept; they are
    /// sent again, which the shipper acknowledges as a duplicate.
    fn drop_after_break(&self) -> Result<()> {
        let mut expected = self.checkpoint()?.map(|c| c.end.sort_key());
        let entries = self.list()?;
        for (i, e) in entries.iter().enumerate() {
            let (start, end) = parse_segment_file_name(&e.name)?;
            if expected.as_ref().is_some_and(|x| *x == end) {
                continue;
            }
            if expected.as_ref().is_some_and(|x| *x != start) {
                let first = entries[i].name.clone();
                tracing::warn!(from = %first, files = entries.len() - i, "spooled files follow a hole in the spool (an interrupted recovery from a damaged file); deleting them, the source sends their range again");
                return self.remove_where(|e| e.name >= first);
            }
            expected = Some(end);
        }
        Ok(())
    }

    /// Takes `len` bytes off the spool's count (never below zero: a file set aside while
    /// its write is being counted).
    fn uncount(&self, len: u64) {
        let _ = self
            .bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(b.saturating_sub(len))
            });
    }

    /// Moves the damaged `entry` to `quarantine/` and deletes every newer spooled file (a
    /// newer file follows a hole, so it cannot be shipped before the hole is read again from
    /// the source, which also writes it again); returns where `entry` went.
    fn quarantine_from(&self, entry: &SpoolEntry) -> Result<PathBuf> {
        // The newer files go first, newest first: a crash at any point then leaves an
        // unbroken run from the checkpoint, never files after a hole.
        self.remove_where(|e| e.name > entry.name)?;
        let to = self.quarantine.join(&entry.name);
        fs::rename(&entry.path, &to).map_err(|err| AgentError::spool(&entry.path, err))?;
        self.uncount(entry.len);
        sync_dir(&self.segments).map_err(|e| AgentError::spool(&self.segments, e))?;
        Ok(to)
    }

    /// Deletes every spooled file: what the source writes next replaces them (after a
    /// damaged file, the pipeline starts again from the checkpoint).
    ///
    /// # Errors
    /// [`AgentError::Spool`] on I/O failure.
    pub fn drop_unacknowledged(&self) -> Result<()> {
        self.remove_where(|_| true)
    }

    /// Deletes the spooled files `pick` chooses, newest first (so that what is left after
    /// a crash midway is still an unbroken run).
    fn remove_where(&self, pick: impl Fn(&SpoolEntry) -> bool) -> Result<()> {
        for e in self.list()?.iter().rev().filter(|e| pick(e)) {
            fs::remove_file(&e.path).map_err(|err| AgentError::spool(&e.path, err))?;
            self.uncount(e.len);
            if let Ok(mut recent) = self.recent.lock() {
                recent.retain(|(name, _)| *name != e.name);
            }
        }
        sync_dir(&self.segments).map_err(|e| AgentError::spool(&self.segments, e))
    }

    /// Records `end` as acknowledged, then deletes the acknowledged file (invariant 2).
    ///
    /// # Errors
    /// [`AgentError::Spool`] on I/O failure.
    pub fn acknowledge(&self, entry: &SpoolEntry, end: &ResumePoint) -> Result<()> {
        self.write_checkpoint(end)?;
        crate::crash_point!("spool-after-checkpoint-before-delete");
        fs::remove_file(&entry.path).map_err(|e| AgentError::spool(&entry.path, e))?;
        sync_dir(&self.segments).map_err(|e| AgentError::spool(&self.segments, e))?;
        self.uncount(entry.len);
        Ok(())
    }

    fn write_checkpoint(&self, end: &ResumePoint) -> Result<()> {
        let body = self.checkpoint_body(end, true)?;
        match write_atomically(&self.checkpoint, &body, "spool-checkpoint-before-fsync") {
            // In place only within one sector, which a write changes whole. A checkpoint
            // that needs more (long GTID states and host names) goes in place without its
            // lineage: the next start then treats the server as the chain's own, as for a
            // checkpoint of an older build, rather than stop on a full disk.
            Err(e) if e.is_spool_full() => {
                let body = if body.len() == SECTOR {
                    body
                } else {
                    warn!(bytes = body.len(), "the disk is full and the checkpoint does not fit one sector: written without the chain's server and last transaction");
                    self.checkpoint_body(end, false)?
                };
                if body.len() != SECTOR {
                    return Err(e);
                }
                match self.overwrite_checkpoint(&body) {
                    Ok(()) => Ok(()),
                    Err(o) if o.kind() == std::io::ErrorKind::InvalidInput => Err(e),
                    Err(o) => Err(AgentError::spool(&self.checkpoint, o)),
                }
            }
            other => other,
        }
    }

    /// The checkpoint's padded JSON, with or without the lineage.
    fn checkpoint_body(&self, end: &ResumePoint, lineage: bool) -> Result<Vec<u8>> {
        let body = serde_json::to_vec(&Checkpoint {
            kind: end.end.kind(),
            end: end.end.to_string(),
            open_trx: end.open_trx.as_ref().map(ToString::to_string),
            origin: if lineage {
                end.origin.clone()
            } else {
                String::new()
            },
            last_trx: end.last_trx.as_ref().filter(|_| lineage).map(Into::into),
        })
        .map_err(|e| AgentError::spool(&self.checkpoint, std::io::Error::other(e)))?;
        Ok(padded(body))
    }

    /// Writes the checkpoint over the old one in place, which needs no free block: on a
    /// full disk the atomic rename cannot get a new file, and the spooled file an
    /// acknowledgement deletes (freeing space) may only go once the checkpoint is written.
    /// The padded body fills whole 512-byte sectors of the same length as the old one, and
    /// the content proper lies in the first, so the write is as atomic as a sector's.
    fn overwrite_checkpoint(&self, body: &[u8]) -> std::io::Result<()> {
        use std::io::{Seek, SeekFrom};
        let mut f = fs::OpenOptions::new().write(true).open(&self.checkpoint)?;
        if f.metadata()?.len() != body.len() as u64 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the old checkpoint has another length",
            ));
        }
        f.seek(SeekFrom::Start(0))?;
        f.write_all(body)?;
        f.sync_all()
    }

    /// Remembers the shipper's segment limit, so that the next start seals within it
    /// before the shipper answers.
    ///
    /// # Errors
    /// [`AgentError::Spool`] on I/O failure.
    pub fn save_limits(&self, limits: &Limits) -> Result<()> {
        let body = serde_json::to_vec(limits)
            .map_err(|e| AgentError::spool(&self.limits, std::io::Error::other(e)))?;
        write_atomically(&self.limits, &body, "spool-limits-before-fsync")
    }

    /// Saves the capsule of `epoch` durably, before anything is sealed under its key.
    ///
    /// # Errors
    /// [`AgentError::Spool`] on I/O failure.
    pub fn save_capsule(&self, epoch: &str, body: &[u8]) -> Result<()> {
        let path = self.capsules.join(format!("{epoch}.json"));
        write_atomically(&path, body, "spool-capsule-before-fsync")
    }

    /// The capsule of `epoch`, as [`Self::save_capsule`] saved it.
    ///
    /// # Errors
    /// [`AgentError::Spool`] when it is missing or unreadable.
    pub async fn capsule(&self, epoch: &str) -> Result<Vec<u8>> {
        let path = self.capsules.join(format!("{epoch}.json"));
        tokio::fs::read(&path)
            .await
            .map_err(|e| AgentError::spool(&path, e))
    }

    /// The newest capsule saved (epochs sort by when they began), if any.
    pub fn newest_capsule(&self) -> Option<Vec<u8>> {
        let newest = fs::read_dir(&self.capsules)
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .max()?;
        fs::read(newest).ok()
    }

    /// Removes the capsules of earlier epochs once no segment is spooled (each was shipped
    /// before its first segment was acknowledged); `keep` stays.
    ///
    /// # Errors
    /// [`AgentError::Spool`] on I/O failure.
    pub fn prune_capsules(&self, keep: &str) -> Result<()> {
        if !self.list()?.is_empty() {
            return Ok(());
        }
        let dir = &self.capsules;
        for entry in fs::read_dir(dir).map_err(|e| AgentError::spool(dir, e))? {
            let path = entry.map_err(|e| AgentError::spool(dir, e))?.path();
            if path.file_stem().is_some_and(|s| s != keep) {
                fs::remove_file(&path).map_err(|e| AgentError::spool(&path, e))?;
            }
        }
        Ok(())
    }

    /// The shipper's segment limit as last agreed, if ever.
    pub fn saved_limits(&self) -> Option<Limits> {
        let bytes = fs::read(&self.limits).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// The last acknowledged position, if any.
    ///
    /// # Errors
    /// [`AgentError::Spool`] when the file exists but cannot be read or parsed.
    pub fn checkpoint(&self) -> Result<Option<ResumePoint>> {
        let bytes = match fs::read(&self.checkpoint) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(AgentError::spool(&self.checkpoint, e)),
        };
        let bad = |msg: String| AgentError::spool(&self.checkpoint, std::io::Error::other(msg));
        let cp: Checkpoint = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
        let parse = |text: &str| Position::parse(cp.kind, text).map_err(|e| bad(e.to_string()));
        Ok(Some(ResumePoint {
            end: parse(&cp.end)?,
            open_trx: cp.open_trx.as_deref().map(parse).transpose()?,
            origin: cp.origin,
            last_trx: cp
                .last_trx
                .as_ref()
                .map(TrxMark::try_from)
                .transpose()
                .map_err(|e| bad(e.to_string()))?,
        }))
    }

    /// Where the source resumes (invariant 3): end of the newest spooled segment, else the
    /// checkpoint.
    ///
    /// # Errors
    /// As [`Self::read`] and [`Self::checkpoint`].
    pub fn resume_position(&self) -> Result<Option<ResumePoint>> {
        if let Some(last) = self.list()?.last() {
            return Ok(Some(ResumePoint::after(&self.read(last)?.header.meta)));
        }
        self.checkpoint()
    }

    /// Bytes currently spooled.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

/// A disk sector: the unit a write changes whole.
const SECTOR: usize = 512;

/// The checkpoint's JSON padded with spaces (which JSON ignores) to whole 512-byte sectors,
/// so that it can be overwritten in place ([`Spool::overwrite_checkpoint`]).
fn padded(mut body: Vec<u8>) -> Vec<u8> {
    let len = body.len().div_ceil(SECTOR).max(1) * SECTOR;
    body.resize(len, b' ');
    body
}

/// A file's modification time, ms since the Unix epoch (0 if the file system does not say).
fn modified_ms(meta: &fs::Metadata) -> i64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as i64)
}

/// Takes the exclusive lock of the spool directory (`lock`, holding the owner's PID), or
/// names the process that holds it. The kernel releases it when the process dies, however.
fn lock_dir(dir: &Path) -> Result<File> {
    use std::os::fd::AsRawFd;
    let path = dir.join("lock");
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| AgentError::spool(&path, e))?;
    // SAFETY: flock on a descriptor this function owns; no memory is involved.
    let locked = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
    if !locked {
        let holder = fs::read_to_string(&path).unwrap_or_default();
        return Err(AgentError::SpoolInUse {
            dir: dir.to_owned(),
            holder: holder.trim().to_owned(),
        });
    }
    // The PID is written over the old one at a fixed width, so that a restart on a full
    // disk needs no new block.
    let pid = format!("{:<20}", std::process::id());
    use std::io::{Seek, SeekFrom};
    f.seek(SeekFrom::Start(0))
        .and_then(|_| f.write_all(pid.as_bytes()))
        .and_then(|()| f.set_len(pid.len() as u64))
        .and_then(|()| f.sync_all())
        .map_err(|e| AgentError::spool(&path, e))?;
    Ok(f)
}

/// Replaces `path` with `body` whole or not at all: a temporary file (`<name>.tmp`, which
/// [`Spool::open`] removes if a crash left it), fsync, rename, fsync of the directory. What
/// a failed write took (a full disk's last blocks) is given back at once. `_crash` names
/// the crash point between the write and the fsync.
fn write_atomically(path: &Path, body: &[u8], _crash: &str) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let write = || -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(body)?;
        crate::crash_point!(_crash);
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        sync_dir(path.parent().unwrap_or(Path::new(".")))
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        AgentError::spool(path, e)
    })
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use logferry_common::{BinlogPos, SegmentMeta, StreamId};

    fn seg(from: u64, to: u64) -> Segment {
        let meta = SegmentMeta {
            stream: StreamId::new("s").unwrap(),
            source: SourceKind::Mysql,
            start: Position::Mysql(BinlogPos::new("b.000001", from).unwrap()),
            end: Position::Mysql(BinlogPos::new("b.000001", to).unwrap()),
            open_trx: None,
            first_event_ms: 0,
            last_event_ms: 0,
            event_count: 1,
            lineage: logferry_common::segment::Lineage::default(),
        };
        Segment::seal(meta, b"payload", logferry_common::Compression::default()).unwrap()
    }

    #[test]
    fn write_list_acknowledge_resume() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        assert_eq!(spool.resume_position().unwrap(), None);
        let a = spool.write(seg(4, 100)).unwrap();
        spool.write(seg(100, 250)).unwrap();
        fs::write(dir.path().join("segments/x.lfs.tmp"), b"half").unwrap();
        drop(spool);
        let spool = Spool::open(dir.path()).unwrap();
        let list = spool.list().unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0], a);
        assert_eq!(
            spool.resume_position().unwrap().unwrap().to_string(),
            "b.000001:250"
        );
        spool
            .acknowledge(&list[0], &ResumePoint::after(&seg(4, 100).header.meta))
            .unwrap();
        let mid_trx = ResumePoint {
            end: seg(100, 250).header.meta.end,
            open_trx: Some(Position::Mysql(
                BinlogPos::parse("b.000001:90@0-1-5").unwrap(),
            )),
            origin: "server_id=1 host=db1:3306".into(),
            last_trx: Some(TrxMark {
                id: "0-1-5".into(),
                before: "0-1-4".into(),
                digest: [7; 32],
            }),
        };
        spool.acknowledge(&list[1], &mid_trx).unwrap();
        assert!(spool.list().unwrap().is_empty());
        assert_eq!(spool.bytes(), 0);
        assert_eq!(spool.resume_position().unwrap().unwrap(), mid_trx);
        assert!(!dir.path().join("segments/x.lfs.tmp").exists());
    }

    #[test]
    fn a_checkpoint_is_whole_sectors_and_can_be_written_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let first = ResumePoint::after(&seg(4, 100).header.meta);
        spool.write_checkpoint(&first).unwrap();
        assert_eq!(
            fs::metadata(dir.path().join("checkpoint.json"))
                .unwrap()
                .len()
                % 512,
            0
        );
        let second = ResumePoint::after(&seg(100, 250).header.meta);
        let body = padded(
            serde_json::to_vec(&Checkpoint {
                kind: second.end.kind(),
                end: second.end.to_string(),
                open_trx: None,
                origin: String::new(),
                last_trx: None,
            })
            .unwrap(),
        );
        spool.overwrite_checkpoint(&body).unwrap();
        assert_eq!(spool.checkpoint().unwrap(), Some(second));
    }

    #[test]
    fn a_second_open_of_the_same_directory_is_refused_while_the_first_lives() {
        let dir = tempfile::tempdir().unwrap();
        let first = Spool::open(dir.path()).unwrap();
        let err = Spool::open(dir.path()).unwrap_err();
        assert!(
            matches!(&err, AgentError::SpoolInUse { holder, .. } if *holder == std::process::id().to_string()),
            "{err}"
        );
        drop(first);
        assert!(Spool::open(dir.path()).is_ok());
    }

    #[test]
    fn files_after_a_hole_left_by_a_crash_are_dropped_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let acked = spool.write(seg(4, 100)).unwrap();
        spool
            .write_checkpoint(&ResumePoint::after(&seg(4, 100).header.meta))
            .unwrap();
        let next = spool.write(seg(100, 250)).unwrap();
        let after_hole = spool.write(seg(400, 500)).unwrap();
        drop(spool);
        let spool = Spool::open(dir.path()).unwrap();
        assert_eq!(spool.list().unwrap(), vec![acked.clone(), next.clone()]);
        assert_eq!(spool.bytes(), acked.len + next.len);
        assert!(!after_hole.path.exists());
    }

    #[test]
    fn a_corrupt_file_is_quarantined_with_every_newer_one() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let a = spool.write(seg(4, 100)).unwrap();
        let e = spool.write(seg(100, 250)).unwrap();
        let c = spool.write(seg(250, 400)).unwrap();
        let mut bytes = fs::read(&e.path).unwrap();
        bytes[40] ^= 1;
        fs::write(&e.path, bytes).unwrap();
        // Found by the next process: the in-memory copies are gone.
        drop(spool);
        let spool = Spool::open(dir.path()).unwrap();
        assert!(spool.read(&a).is_ok());
        assert!(matches!(
            spool.read(&e),
            Err(AgentError::SpoolCorrupt { .. })
        ));
        assert!(dir.path().join("quarantine").join(&e.name).exists());
        assert!(
            !c.path.exists(),
            "a newer file follows the hole and is dropped"
        );
        assert_eq!(spool.list().unwrap(), vec![a.clone()]);
        assert_eq!(spool.bytes(), a.len);
    }

    #[test]
    fn recent_segments_are_read_from_memory_once_then_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let first = spool.write(seg(4, 100)).unwrap();
        let second = spool.write(seg(100, 250)).unwrap();
        let third = spool.write(seg(250, 400)).unwrap();
        // The file of the second is damaged after it was written: its in-memory copy is
        // what the ship loop gets, and it is the segment as sealed.
        let mut bytes = fs::read(&second.path).unwrap();
        bytes[40] ^= 1;
        fs::write(&second.path, &bytes).unwrap();
        assert_eq!(spool.read(&first).unwrap().bytes(), seg(4, 100).bytes());
        assert_eq!(spool.read(&second).unwrap().bytes(), seg(100, 250).bytes());
        // Handed out once: a second read (a retry after a restart) goes to the file, which
        // is set aside with the newer third one (it follows the hole).
        assert!(matches!(
            spool.read(&second),
            Err(AgentError::SpoolCorrupt { .. })
        ));
        assert!(!third.path.exists());
        assert!(spool.recent.lock().unwrap().is_empty());
    }

    /// A segment holding `len` incompressible bytes (stored as they are).
    fn big_seg(from: u64, to: u64, len: usize) -> Segment {
        let mut payload = vec![0u8; len];
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for b in &mut payload {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        let meta = seg(from, to).header.meta;
        Segment::seal(meta, &payload, logferry_common::Compression::None).unwrap()
    }

    #[test]
    fn memory_holds_the_newest_segments_within_the_byte_budget() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let half = RECENT_BYTES / 2 + 1;
        let first = spool.write(big_seg(4, 100, half)).unwrap();
        let second = spool.write(big_seg(100, 250, half)).unwrap();
        let third = spool.write(big_seg(250, 400, RECENT_BYTES + 1)).unwrap();
        let fourth = spool.write(big_seg(400, 500, half)).unwrap();
        for e in [&first, &second, &third, &fourth] {
            let mut bytes = fs::read(&e.path).unwrap();
            bytes[40] ^= 1;
            fs::write(&e.path, &bytes).unwrap();
        }
        // Two halves overflow the budget, so the first went back to disk when the second
        // was written; the second went with the third, which alone is over the budget and
        // never stayed. Damaged files show which reads came from disk (newest first: a
        // damaged file sets aside every newer one).
        assert_eq!(
            spool.read(&fourth).unwrap().bytes(),
            big_seg(400, 500, half).bytes()
        );
        for e in [&third, &second, &first] {
            assert!(matches!(
                spool.read(e),
                Err(AgentError::SpoolCorrupt { .. })
            ));
        }
    }
}

//! AOF mode: tails the multi-part append-only directory of Redis 7 (its manifest, a base
//! file and incremental files) for a sidecar that shares the server's data volume and may
//! not open a replication link.
//!
//! Positions: there is no replication offset in a file, so the offset of a place is the
//! incremental file's sequence number shifted left by [`FILE_BITS`] plus the byte in that
//! file (`1:1099511627776` is the start of `appendonly.aof.1.incr.aof`), and the
//! replication id is [`AOF_REPLID`]. A restart seeks to the stored end in its file.
//!
//! Rewrites: `BGREWRITEAOF` opens the next incremental file and later replaces the base;
//! the old file is complete once the manifest names a newer one, so the agent reads it to
//! its end (an open file is still readable after Redis deletes it) and goes on with the
//! next: the chain runs on, the jump between files is a `#SKIP:`. Each new base (an RDB,
//! `aof-use-rdb-preamble yes`) is stored as a snapshot of the place where its incremental
//! file starts, so every rewrite brings a snapshot. Only when the file the chain ends in
//! is gone before the agent read it (the agent was down across a rewrite) does the chain
//! break: a new history starts from the current base.
//!
//! The server writes whole commands; a command cut at the end of a file that the server
//! no longer writes to, or that stays cut for [`TRUNCATED_AFTER`], is a damaged file: the
//! agent stops with the fix (`redis-check-aof --fix`), having shipped everything before.

use std::path::{Path, PathBuf};
use std::time::Duration;

use logferry_common::format::redis::rdb::{scan, RdbFacts};
use logferry_common::format::redis::{resp, RedisSnapshot, ReplPos};
use logferry_common::snapshot::SnapshotContent;
use logferry_common::Position;
use logferry_config::RedisSource as RedisConfig;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{info, warn};

use super::framer::Framer;
use super::rdb::{checked_facts, snapshot_content};
use crate::error::{AgentError, Result};
use crate::metrics::now_ms;
use crate::sources::{SnapshotPart, Source, SourceEvent, SourceItem};

/// Bits of a position's offset that hold the byte within an incremental file.
pub const FILE_BITS: u32 = 40;

/// The replication id of positions in AOF mode (there is none): forty zeros.
pub const AOF_REPLID: &str = "0000000000000000000000000000000000000000";

/// How long a command may stay cut at the end of the file being written before the file
/// counts as damaged (the server writes each command whole).
pub const TRUNCATED_AFTER: Duration = Duration::from_secs(10);

/// Commands without a `#TS:` line before the agent says the server writes none.
const WARN_WITHOUT_TS: u64 = 1000;

/// How often the end of the file and the manifest are looked at when nothing is new.
const POLL: Duration = Duration::from_millis(50);

/// Bytes read at a time.
const READ_BYTES: usize = 256 * 1024;

/// Largest snapshot part handed on at a time.
const PART_BYTES: usize = 1024 * 1024;

/// The position of byte `at` of incremental file `seq`.
pub fn file_offset(seq: u64, at: u64) -> u64 {
    (seq << FILE_BITS) | at
}

/// One line of the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AofFile {
    /// File name within the directory.
    pub name: String,
    /// Its sequence number.
    pub seq: u64,
}

/// What the manifest lists: the base and the incremental files, oldest first (history
/// files, which await deletion, are left out).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    /// The base file.
    pub base: Option<AofFile>,
    /// The incremental files in order.
    pub incrs: Vec<AofFile>,
    /// Files a rewrite replaced, which Redis deletes soon (an agent that resumes in one
    /// reads it to its end while it can).
    pub history: Vec<AofFile>,
}

/// Parses a manifest (`file NAME seq N type b|h|i` lines).
///
/// # Errors
/// [`AgentError::ServerSetup`] quoting a line that does not read.
pub fn parse_manifest(text: &str) -> Result<Manifest> {
    let mut m = Manifest::default();
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let words: Vec<&str> = line.split_whitespace().collect();
        let field = |key: &str| {
            words
                .windows(2)
                .find(|w| w[0] == key)
                .map(|w| w[1].trim_matches('"'))
        };
        let (Some(name), Some(seq), Some(kind)) = (field("file"), field("seq"), field("type"))
        else {
            return Err(AgentError::ServerSetup(format!(
                "the AOF manifest line {line:?} does not read (file NAME seq N type b|h|i)"
            )));
        };
        let seq: u64 = seq.parse().map_err(|_| {
            AgentError::ServerSetup(format!(
                "the AOF manifest line {line:?} has no sequence number"
            ))
        })?;
        let file = AofFile {
            name: name.to_owned(),
            seq,
        };
        match kind {
            "b" => m.base = Some(file),
            "i" => m.incrs.push(file),
            _ => m.history.push(file),
        }
    }
    m.incrs.sort_by_key(|f| f.seq);
    Ok(m)
}

/// Reads the manifest in `dir`.
async fn read_manifest(dir: &Path) -> Result<Manifest> {
    let setup = |why: String| {
        AgentError::ServerSetup(format!(
            "{why}: source.aof_dir must be the server's append-only directory (DIR/appendonlydir) with \
             appendonly yes on the server (Redis 7 or later)"
        ))
    };
    let mut entries = tokio::fs::read_dir(dir)
        .await
        .map_err(|e| setup(format!("cannot read {}: {e}", dir.display())))?;
    // Redis writes `temp-<name>.manifest` and renames it over `<name>.manifest`: only the
    // latter is the manifest, and there must be one.
    let mut found = Vec::new();
    while let Some(e) = entries
        .next_entry()
        .await
        .map_err(|e| setup(format!("cannot read {}: {e}", dir.display())))?
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".manifest") && !name.starts_with("temp-") {
            found.push(e.path());
        }
    }
    let path = match found.as_slice() {
        [one] => one.clone(),
        [] => return Err(setup(format!("{} holds no AOF manifest", dir.display()))),
        many => {
            return Err(setup(format!(
                "{} holds {} AOF manifests ({}): one server's directory holds one",
                dir.display(),
                many.len(),
                many.iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
        }
    };
    let text = tokio::fs::read_to_string(&path)
        .await
        .map_err(|e| setup(format!("cannot read {}: {e}", path.display())))?;
    parse_manifest(&text)
}

/// A base file going out as a snapshot, read on a blocking thread beside it.
struct BaseSnapshot {
    name: String,
    file: tokio::fs::File,
    begun: bool,
    sent: u64,
    scan: JoinHandle<logferry_common::Result<RdbFacts>>,
    /// The place of the chain the base stands at.
    at: ReplPos,
}

impl BaseSnapshot {
    /// Opens the base named in `m` (twice: one read for the parts, one for the check) for
    /// a snapshot at `at`.
    async fn open(dir: &Path, m: &Manifest, at: ReplPos) -> Result<BaseSnapshot> {
        let Some(base) = &m.base else {
            return Err(AgentError::ServerSetup(format!(
                "the AOF manifest in {} names no base file; run BGREWRITEAOF on the server to make one",
                dir.display()
            )));
        };
        if !base.name.ends_with(".rdb") {
            return Err(AgentError::ServerSetup(format!(
                "the AOF base {} is not an RDB: set aof-use-rdb-preamble yes (the default) on the server and run BGREWRITEAOF",
                base.name
            )));
        }
        let path = dir.join(&base.name);
        let open_err = |e: std::io::Error| AgentError::Stream {
            addr: path.display().to_string(),
            reason: format!("cannot open the AOF base: {e}"),
        };
        let file = tokio::fs::File::open(&path).await.map_err(open_err)?;
        // The check reads a handle of its own (its own offset), opened now: the next
        // rewrite may delete the base while it is read.
        let check = tokio::fs::File::open(&path)
            .await
            .map_err(open_err)?
            .into_std()
            .await;
        let scan = tokio::task::spawn_blocking(move || scan(std::io::BufReader::new(check)));
        Ok(BaseSnapshot {
            name: base.name.clone(),
            file,
            begun: false,
            sent: 0,
            scan,
            at,
        })
    }

    /// The next part, `None` after the last.
    async fn next(&mut self, dir: &Path) -> Result<Option<SnapshotPart>> {
        if !self.begun {
            self.begun = true;
            return Ok(Some(SnapshotPart::Begin));
        }
        let mut part = vec![0u8; PART_BYTES];
        let n = self
            .file
            .read(&mut part)
            .await
            .map_err(|e| AgentError::Stream {
                addr: dir.join(&self.name).display().to_string(),
                reason: e.to_string(),
            })?;
        if n == 0 {
            return Ok(None);
        }
        part.truncate(n);
        self.sent += n as u64;
        Ok(Some(SnapshotPart::Data(part.into())))
    }

    /// The manifest's part, once every part is out.
    async fn finish(self, dir: &Path) -> Result<(ReplPos, RedisSnapshot)> {
        let what = format!("the AOF base {}", self.name);
        let facts = checked_facts(self.scan, &what, self.sent).await?;
        let server = format!("aof:{}", dir.join(&self.name).display());
        let mut at = self.at;
        at.db = 0;
        let content = snapshot_content(server, "", at.offset, facts);
        Ok((at, content))
    }
}

/// An append-only directory being tailed.
pub struct AofSource {
    dir: PathBuf,
    /// The incremental file being read, its sequence number and the bytes read from it.
    file: tokio::fs::File,
    seq: u64,
    read: u64,
    /// Bytes read and not yet taken: `buf[taken..]`.
    buf: Vec<u8>,
    taken: usize,
    framer: Framer,
    /// The second of the last `#TS:` annotation the server wrote.
    server_ts: Option<i64>,
    /// A base going out as a snapshot.
    snapshot: Option<BaseSnapshot>,
    /// The sequence number of the newest base stored or being stored.
    base_seq: Option<u64>,
    /// Commands read without any `#TS:` line before them (warned about once, at
    /// [`WARN_WITHOUT_TS`]).
    without_ts: u64,
    /// Since when the buffer has ended inside a command at the end of the file.
    cut_since: Option<Instant>,
    beat_every: Duration,
    last_beat: Instant,
    /// Whether an event went out since the last heartbeat.
    active: bool,
}

/// The second of the last `#TS:` line before byte `at` of incremental file `seq`: the time
/// the commands after a resume carry until the next one (the server writes one only when
/// the second changes).
async fn last_ts_before(dir: &Path, m: &Manifest, seq: u64, at: u64) -> Result<Option<i64>> {
    let Some(mut file) = open_incr(dir, m, seq, 0).await? else {
        return Ok(None);
    };
    let mut head = vec![0u8; usize::try_from(at).unwrap_or(usize::MAX)];
    file.read_exact(&mut head)
        .await
        .map_err(|e| AgentError::Stream {
            addr: dir.display().to_string(),
            reason: format!("reading incremental file {seq}: {e}"),
        })?;
    let mut pos = 0;
    let mut last = None;
    while pos < head.len() {
        if head[pos] == b'#' {
            let Some(end) = head[pos..].windows(2).position(|w| w == b"\r\n") else {
                break;
            };
            if let Some(secs) = head[pos..pos + end].strip_prefix(b"#TS:") {
                last = std::str::from_utf8(secs)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .or(last);
            }
            pos += end + 2;
            continue;
        }
        match resp::value_end(&head, pos) {
            Ok(Some(end)) => pos = end,
            _ => break,
        }
    }
    Ok(last)
}

/// A history `history` that starts from the directory's current base: the first
/// incremental file opened at its start, the place, and the base going out as a snapshot.
async fn from_base(
    dir: &Path,
    m: &Manifest,
    history: u32,
) -> Result<(tokio::fs::File, u64, ReplPos, BaseSnapshot)> {
    let first = m.incrs.first().map(|f| f.seq).ok_or_else(|| {
        AgentError::ServerSetup(format!(
            "the AOF manifest in {} names no incremental file",
            dir.display()
        ))
    })?;
    let at = ReplPos::new(history, file_offset(first, 0), AOF_REPLID, 0);
    let file = open_incr(dir, m, first, 0)
        .await?
        .ok_or_else(|| AgentError::Stream {
            addr: dir.display().to_string(),
            reason: "the first incremental file vanished (a rewrite): trying again".into(),
        })?;
    let snapshot = BaseSnapshot::open(dir, m, at.clone()).await?;
    info!(dir = %dir.display(), base = %snapshot.name, history, "the stream continues from the AOF base, stored as a snapshot");
    Ok((file, first, at, snapshot))
}

/// The error of an AOF file the agent cannot read on from: names the file, the byte and
/// the fix.
fn damaged_file(dir: &Path, seq: u64, at: u64, why: &str) -> AgentError {
    AgentError::ServerSetup(format!(
        "the AOF incremental file {seq} in {} is damaged at byte {at}: {why}; everything before it is shipped. \
         Repair the file with redis-check-aof --fix (with the server stopped) and start the agent again",
        dir.display()
    ))
}

/// Opens `dir`'s incremental file `seq` at byte `at`.
async fn open_incr(dir: &Path, m: &Manifest, seq: u64, at: u64) -> Result<Option<tokio::fs::File>> {
    let Some(f) = m
        .incrs
        .iter()
        .chain(m.history.iter().filter(|f| f.name.contains(".incr.")))
        .find(|f| f.seq == seq)
    else {
        return Ok(None);
    };
    let path = dir.join(&f.name);
    let io = |e: std::io::Error| AgentError::Stream {
        addr: path.display().to_string(),
        reason: e.to_string(),
    };
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    let len = file.metadata().await.map_err(io)?.len();
    if len < at {
        return Err(AgentError::Gap(format!(
            "{} holds {len} bytes but the stored chain ends at byte {at} of it: this is not the AOF the stream was read from \
             (another server's directory, or a file rewritten by redis-check-aof); give this server a stream of its own",
            path.display()
        )));
    }
    file.seek(std::io::SeekFrom::Start(at)).await.map_err(io)?;
    Ok(Some(file))
}

/// Opens the directory in `cfg` and continues right after `resume`, or starts with its
/// base as the stream's snapshot (a new stream, or one whose file is gone).
///
/// # Errors
/// [`AgentError::ServerSetup`] for a directory that is not an AOF directory or a base
/// that is not an RDB; [`AgentError::Gap`] for a file shorter than the stored chain.
pub async fn connect(cfg: &RedisConfig, resume: Option<&ReplPos>) -> Result<AofSource> {
    let dir = cfg.aof_dir()?.to_owned();
    let m = read_manifest(&dir).await?;
    let mut continued = None;
    let mut server_ts = None;
    if let Some(r) = resume {
        let (seq, at) = (r.offset >> FILE_BITS, r.offset & ((1 << FILE_BITS) - 1));
        if let Some(file) = open_incr(&dir, &m, seq, at).await? {
            info!(dir = %dir.display(), at = %r, "continuing the AOF where the chain ends");
            server_ts = last_ts_before(&dir, &m, seq, at).await?;
            continued = Some((file, seq, at, r.clone()));
        } else {
            warn!(dir = %dir.display(), chain_end = %r,
                "the AOF file the chain ends in is gone (a rewrite while the agent was down): the chain breaks here and continues from the current base");
        }
    }
    let (file, seq, read, at, snapshot) = match continued {
        Some((file, seq, read, at)) => (file, seq, read, at, None),
        None => {
            let history = resume.map_or(1, |r| r.history + 1);
            let (file, seq, at, snapshot) = from_base(&dir, &m, history).await?;
            (file, seq, 0, at, Some(snapshot))
        }
    };
    Ok(AofSource {
        framer: Framer::new(at),
        dir,
        file,
        seq,
        read,
        buf: Vec::with_capacity(READ_BYTES),
        taken: 0,
        server_ts,
        base_seq: m.base.as_ref().map(|b| b.seq),
        snapshot,
        without_ts: 0,
        cut_since: None,
        beat_every: cfg.ack_every(),
        last_beat: Instant::now(),
        active: false,
    })
}

impl AofSource {
    /// The next command or annotation in the buffer: an event, `Some(None)` for an
    /// annotation (consumed), `None` when the buffer holds no whole one.
    fn parse(&mut self) -> Result<Option<Option<SourceEvent>>> {
        let (seq, at) = (self.seq, self.read - self.pending() as u64);
        let dir = self.dir.clone();
        let damaged = move |why: String| damaged_file(&dir, seq, at, &why);
        let buf = &self.buf[self.taken..];
        if buf.first() == Some(&b'#') {
            let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
                return Ok(None);
            };
            if let Some(secs) = buf[..end].strip_prefix(b"#TS:") {
                self.server_ts = std::str::from_utf8(secs).ok().and_then(|s| s.parse().ok());
            }
            self.taken += end + 2;
            self.framer.skip(end as u64 + 2);
            return Ok(Some(None));
        }
        let Some(end) = resp::value_end(buf, 0).map_err(|e| damaged(e.to_string()))? else {
            return Ok(None);
        };
        let bytes = &buf[..end];
        let args = resp::command_args(bytes).map_err(|e| damaged(e.to_string()))?;
        let time_ms = match self.server_ts {
            Some(s) => s * 1000,
            None => {
                self.without_ts += 1;
                if self.without_ts == WARN_WITHOUT_TS {
                    warn!("the AOF has no #TS: lines (aof-timestamp-enabled is off on the server): commands are stamped with the time the agent reads them, so a catch-up's commands all read as now; set aof-timestamp-enabled yes for restores by time");
                }
                now_ms()
            }
        };
        let ev = self.framer.command(bytes, &args, time_ms)?;
        self.taken += end;
        Ok(Some(Some(ev)))
    }

    /// Starts a new history from the current base: what lay between the chain's end and
    /// the base is gone from the directory, so the chain breaks (the pipeline records it).
    async fn restart_from_base(&mut self, m: &Manifest) -> Result<()> {
        let history = self.framer.cursor().history + 1;
        let (file, seq, at, snapshot) = from_base(&self.dir, m, history).await?;
        self.snapshot = Some(snapshot);
        self.base_seq = m.base.as_ref().map(|b| b.seq);
        self.framer = Framer::new(at);
        self.file = file;
        self.seq = seq;
        self.read = 0;
        self.buf.clear();
        self.taken = 0;
        self.server_ts = None;
        Ok(())
    }

    /// Bytes read from the current file and not yet taken.
    fn pending(&self) -> usize {
        self.buf.len() - self.taken
    }

    /// Reads more of the current file; `false` at its end.
    async fn fill(&mut self) -> Result<bool> {
        self.buf.drain(..self.taken);
        self.taken = 0;
        let start = self.buf.len();
        self.buf.resize(start + READ_BYTES, 0);
        let n = self.file.read(&mut self.buf[start..]).await;
        let n = match n {
            Ok(n) => n,
            Err(e) => {
                self.buf.truncate(start);
                return Err(AgentError::Stream {
                    addr: self.dir.display().to_string(),
                    reason: format!("reading incremental file {}: {e}", self.seq),
                });
            }
        };
        self.buf.truncate(start + n);
        self.read += n as u64;
        Ok(n > 0)
    }

    /// At the end of the current file: goes on with the next incremental file once the
    /// manifest names one, and starts a snapshot of a new base once the chain has reached
    /// its place. `true` when something changed.
    async fn follow_manifest(&mut self) -> Result<bool> {
        let m = read_manifest(&self.dir).await?;
        if m.incrs.iter().any(|f| f.seq > self.seq) {
            // The server flushes the old file before it names the next: what it wrote
            // between our end of file and this look at the manifest is read first.
            if self.fill().await? {
                return Ok(true);
            }
            if self.pending() > 0 {
                let (seq, at) = (self.seq, self.read - self.pending() as u64);
                return Err(damaged_file(
                    &self.dir,
                    seq,
                    at,
                    "it ends inside a command and the server has moved on to the next file",
                ));
            }
            // Incremental files are numbered without holes: the next one, or the chain
            // would skip a file's commands.
            let next = self.seq + 1;
            let Some(file) = open_incr(&self.dir, &m, next, 0).await? else {
                warn!(after = self.seq, "the next AOF file is gone before it was read (rewrites while the agent lagged behind): the chain breaks here and continues from the current base");
                self.restart_from_base(&m).await?;
                return Ok(true);
            };
            info!(
                from = self.seq,
                to = next,
                "the server writes the next AOF file (a rewrite); continuing there"
            );
            let jump = file_offset(next, 0) - self.framer.cursor().offset;
            self.framer.skip(jump);
            // The server's last #TS: holds on in the next file (it writes one only when the
            // second changes).
            self.file = file;
            self.seq = next;
            self.read = 0;
            return Ok(true);
        }
        let new_base = m.base.as_ref().filter(|b| Some(b.seq) != self.base_seq);
        if let (Some(base), None) = (new_base, &self.snapshot) {
            // The base holds everything before its first incremental file.
            let Some(first) = m.incrs.first().map(|f| f.seq) else {
                return Ok(false);
            };
            if self.seq >= first {
                let start = file_offset(first, 0);
                let emitted = self.framer.emitted();
                let at = if emitted.offset < start {
                    emitted.clone()
                } else {
                    ReplPos::new(emitted.history, start, AOF_REPLID, 0)
                };
                self.base_seq = Some(base.seq);
                match BaseSnapshot::open(&self.dir, &m, at).await {
                    Ok(s) => {
                        info!(base = %s.name, "a rewrite made a new AOF base: storing it as a snapshot");
                        self.snapshot = Some(s);
                        return Ok(true);
                    }
                    Err(e) => warn!(error = %e, "the new AOF base is not stored as a snapshot"),
                }
            }
        }
        Ok(false)
    }
}

impl Source for AofSource {
    async fn next(&mut self) -> Result<SourceItem> {
        loop {
            if let Some(snap) = &mut self.snapshot {
                match snap.next(&self.dir).await? {
                    Some(part) => return Ok(SourceItem::Snapshot(part)),
                    None => {
                        let Some(snap) = self.snapshot.take() else {
                            continue;
                        };
                        let (at, content) = snap.finish(&self.dir).await?;
                        return Ok(SourceItem::Snapshot(SnapshotPart::End {
                            position: Position::Redis(at),
                            content: SnapshotContent::Redis(content),
                        }));
                    }
                }
            }
            match self.parse()? {
                Some(Some(ev)) => {
                    self.active = true;
                    self.cut_since = None;
                    return Ok(SourceItem::Event(ev));
                }
                Some(None) => continue,
                None => {}
            }
            if self.fill().await? {
                continue;
            }
            if self.follow_manifest().await? {
                continue;
            }
            if self.pending() == 0 {
                self.cut_since = None;
            } else if self.cut_since.get_or_insert_with(Instant::now).elapsed() > TRUNCATED_AFTER {
                let (seq, at) = (self.seq, self.read - self.pending() as u64);
                return Err(damaged_file(
                    &self.dir,
                    seq,
                    at,
                    &format!(
                        "it has ended inside a command for {} s: it was cut (a crash or a full disk)",
                        TRUNCATED_AFTER.as_secs()
                    ),
                ));
            }
            if self.last_beat.elapsed() >= self.beat_every {
                self.last_beat = Instant::now();
                let idle = !std::mem::take(&mut self.active) && !self.framer.in_multi();
                if idle {
                    return Ok(SourceItem::Heartbeat);
                }
            }
            tokio::time::sleep(POLL).await;
        }
    }

    fn preamble(&self) -> &[u8] {
        self.framer.preamble()
    }

    fn head(&self) -> Option<Position> {
        Some(Position::Redis(self.framer.emitted().clone()))
    }

    async fn durable(&mut self, _end: &Position) -> Result<()> {
        Ok(())
    }

    fn origin(&self) -> &str {
        ""
    }

    fn new_leg(&self) -> Option<&crate::sources::NewLeg> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_list_the_base_and_the_incremental_files_in_order() {
        let m = parse_manifest(
            "file appendonly.aof.2.base.rdb seq 2 type b\n\
             file appendonly.aof.1.incr.aof seq 1 type h\n\
             file appendonly.aof.3.incr.aof seq 3 type i\n\
             file appendonly.aof.2.incr.aof seq 2 type i\n",
        )
        .unwrap();
        assert_eq!(m.base.map(|b| b.seq), Some(2));
        let seqs: Vec<u64> = m.incrs.iter().map(|f| f.seq).collect();
        assert_eq!(seqs, [2, 3]);
        let err = parse_manifest("file x seq y type i")
            .unwrap_err()
            .to_string();
        assert!(err.contains("sequence"), "{err}");
        assert_eq!(file_offset(3, 17) >> FILE_BITS, 3);
        assert_eq!(
            ReplPos::parse(&format!("1:5@{AOF_REPLID}/2")).unwrap().db,
            2
        );
    }
}

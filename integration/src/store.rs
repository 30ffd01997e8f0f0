//! Reading back what the store holds, and what the server's binlog holds, for comparison.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use logferry_common::crypto::{EpochKey, KeyCapsule, MasterKey};
use logferry_common::format::mysql::{
    code, file_events, EventHeader, ExportFiles, LOG_EVENT_ARTIFICIAL_F,
};
use logferry_common::{DecodeLimits, Position, Segment, StreamId};

/// One binlog event identified by file and end offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinlogEvent {
    /// Binlog file name.
    pub file: String,
    /// `log_pos` (offset right after the event).
    pub log_pos: u32,
    /// Event type.
    pub event_type: u8,
    /// Raw bytes.
    pub bytes: Vec<u8>,
}

/// A stored segment and where its key is (the test key's capsule in the store, when
/// encrypted): it reads as a [`Segment`], and [`StoredSegment::payload`] opens it.
#[derive(Debug, Clone)]
pub struct StoredSegment {
    segment: Segment,
    store_dir: PathBuf,
}

impl std::ops::Deref for StoredSegment {
    type Target = Segment;

    fn deref(&self) -> &Segment {
        &self.segment
    }
}

impl StoredSegment {
    /// The payload: decrypted with its epoch key (opened with the test key), or read in
    /// clear.
    ///
    /// # Errors
    /// When its key cannot be opened, or it does not open or decompress.
    pub fn payload(&self) -> anyhow::Result<Vec<u8>> {
        Ok(match self.segment.header.key_ref() {
            Some(r) => {
                let key = epoch_key(&self.store_dir, &self.segment.header.meta.stream, &r.epoch)?;
                self.segment.open(&key)?
            }
            None => self.segment.payload()?,
        })
    }
}

/// The epoch key `epoch` of `stream`, from its capsule under the local store directory,
/// opened with the test master key.
///
/// # Errors
/// When the capsule is missing or does not open.
pub fn epoch_key(store_dir: &Path, stream: &StreamId, epoch: &str) -> anyhow::Result<EpochKey> {
    let path = store_dir.join(logferry_common::keys::capsule_key(stream, epoch));
    let capsule = KeyCapsule::from_json(
        &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
    )?;
    let text = std::fs::read_to_string(crate::logferry::test_key()?)?;
    let master = MasterKey::from_text(crate::logferry::TEST_KEY_ID, &text, "the test key")?;
    Ok(capsule.open(&master)?)
}

/// A decoded segment with where its key is: `store_dir`.
pub fn with_key(store_dir: &Path, segment: Segment) -> StoredSegment {
    StoredSegment {
        segment,
        store_dir: store_dir.to_owned(),
    }
}

/// Every stored segment of `stream` under the local store directory, decoded and validated,
/// in key (= chain) order.
///
/// # Errors
/// When a segment does not decode.
pub fn segments(store_dir: &Path, stream: &str) -> anyhow::Result<Vec<(String, StoredSegment)>> {
    let stream = logferry_common::StreamId::new(stream)?;
    let dir = store_dir.join(logferry_common::keys::segments_prefix(&stream));
    let mut names: Vec<_> = match std::fs::read_dir(&dir) {
        Ok(d) => d
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.retain(|n| n.ends_with(".lfs"));
    names.sort();
    names
        .into_iter()
        .map(|n| {
            let bytes = std::fs::read(dir.join(&n))?;
            let segment =
                Segment::decode(bytes, &DecodeLimits::stored()).with_context(|| n.clone())?;
            Ok((n, with_key(store_dir, segment)))
        })
        .collect()
}

/// End position of the stored chain.
pub fn chain_end(segs: &[(String, StoredSegment)]) -> Option<Position> {
    segs.last().map(|(_, s)| s.header.meta.end.clone())
}

/// Rebuilds binlog file images from stored segments (what `export` produces).
///
/// # Errors
/// When a payload is malformed.
pub fn export_files(segs: &[(String, StoredSegment)]) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let mut out = ExportFiles::default();
    for (_, s) in segs {
        let start = s.header.meta.events_start().as_mysql()?;
        out.push_segment(start, &s.payload()?)?;
    }
    Ok(out.finish())
}

/// The events in binlog file images, skipping artificial and annotate events.
///
/// # Errors
/// When a file is malformed.
pub fn events_of_files(files: &[(String, Vec<u8>)]) -> anyhow::Result<Vec<BinlogEvent>> {
    let mut out = Vec::new();
    for (name, bytes) in files {
        for ev in file_events(bytes) {
            let ev = ev?;
            let h = EventHeader::parse(ev)?;
            if h.flags & LOG_EVENT_ARTIFICIAL_F != 0
                || h.log_pos == 0
                // MariaDB sends ANNOTATE_ROWS only to clients that ask for it (the stock tool does).
                || h.event_type == code::MARIADB_ANNOTATE_ROWS
            {
                continue;
            }
            out.push(BinlogEvent {
                file: name.clone(),
                log_pos: h.log_pos,
                event_type: h.event_type,
                bytes: ev.to_vec(),
            });
        }
    }
    Ok(out)
}

/// The stock tool copying a server's binlogs from `first_file` on into `dir`
/// (`mariadb-binlog --read-from-remote-server --raw --to-last-log`), as root over TCP.
pub fn stock_copy(port: u16, first_file: &str, dir: &Path) -> Command {
    let mut cmd = Command::new("mariadb-binlog");
    cmd.args([
        "--read-from-remote-server",
        "--raw",
        "--to-last-log",
        "--host=127.0.0.1",
        "--user=root",
    ])
    .arg(format!("--port={port}"))
    .arg(format!("--result-file={}/", dir.display()))
    .arg(first_file);
    cmd
}

/// Copies the server's binlogs with the stock tool
/// (`mariadb-binlog --read-from-remote-server --raw --to-last-log`) into `dir` and returns
/// the file images.
///
/// # Errors
/// When the tool fails.
pub fn remote_binlog_files(
    port: u16,
    first_file: &str,
    dir: &Path,
) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    std::fs::create_dir_all(dir)?;
    let out = stock_copy(port, first_file, dir)
        .output()
        .context("cannot run mariadb-binlog")?;
    if !out.status.success() {
        bail!(
            "mariadb-binlog failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        files.insert(
            e.file_name().to_string_lossy().into_owned(),
            std::fs::read(e.path())?,
        );
    }
    Ok(files.into_iter().collect())
}

/// Runs `mariadb-binlog FILE` on each image written under `dir`, failing on any error.
///
/// # Errors
/// When the tool rejects a file.
pub fn decode_with_stock_tool(
    files: &[(String, Vec<u8>)],
    dir: &Path,
) -> anyhow::Result<Vec<std::path::PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut paths = Vec::new();
    for (name, bytes) in files {
        let p = dir.join(name);
        std::fs::write(&p, bytes)?;
        let out = Command::new("mariadb-binlog").arg(&p).output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() || stderr.contains("ERROR") {
            bail!("mariadb-binlog cannot read exported {name}: {stderr}");
        }
        paths.push(p);
    }
    Ok(paths)
}

/// Replays binlog files into a server with `mariadb-binlog FILES | mariadb`, as
/// RESTORE.txt of an export says: with the packet limit raised on both sides, since a bulk
/// statement's rows become one `BINLOG` statement.
///
/// # Errors
/// When the replay fails.
pub fn replay(paths: &[std::path::PathBuf], port: u16) -> anyhow::Result<()> {
    let files: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    let client = format!(
        "mariadb --host=127.0.0.1 --port={port} --user=root --max-allowed-packet=1073741824"
    );
    let script = format!(
        "set -o pipefail; {client} -e 'SET GLOBAL max_allowed_packet = 1073741824' && mariadb-binlog {} | {client}",
        files.join(" ")
    );
    let out = Command::new("bash").arg("-c").arg(&script).output()?;
    if !out.status.success() {
        bail!("replay failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

//! What every source kind's restore, export and drill share: reading a stored segment's
//! payload and a snapshot's chunks (each verified), progress bars, and the report that
//! `logferry-shipper` prints. The kind-specific work lives in [`crate::sources`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use logferry_common::keys::{chunk_key, manifest_key};
use logferry_common::snapshot::{open_chunk, ChunkSealing, SnapshotManifest};
use logferry_common::{DecodeLimits, Segment, StreamId};
use tokio::io::AsyncWriteExt;

use crate::catalog::SegmentRef;
use crate::drill_record::Verdict;
use crate::error::{Result, ShipperError};
use crate::interrupt::Interrupt;
use crate::read_ahead::{read_ahead, Held};
use crate::storage::Store;

/// What a restore or export is asked to do, for any source kind.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// The stream.
    pub stream: &'a StreamId,
    /// `--to`: a time, a position of the stream's kind, or `latest` (kinds add their own,
    /// e.g. a MariaDB GTID).
    pub to: &'a str,
}

/// Options of a restore into a server.
#[derive(Debug, Clone)]
pub struct RestoreOptions<'a> {
    /// `--target`: the server's URL; its scheme must fit the stream's kind.
    pub target: &'a str,
    /// Drop the target's own databases (outside the system schemas) before restoring.
    pub force: bool,
    /// Leave the target's durability settings alone while replaying.
    pub keep_durability: bool,
    /// Continue an interrupted restore from the position it saved on the target.
    pub resume: bool,
    /// A stop requested by the operator.
    pub interrupt: Interrupt,
}

/// Options of an export into a directory.
#[derive(Debug, Clone)]
pub struct ExportOptions<'a> {
    /// Start at this position (text of the stream's kind) instead of a snapshot.
    pub from: Option<&'a str>,
    /// Directory to write into.
    pub dir: &'a Path,
}

/// What a finished restore or export did, for the operator.
#[derive(Debug, Clone)]
pub struct Report {
    /// The snapshot loaded (or written) first, if any.
    pub snapshot: Option<SnapshotManifest>,
    /// Where the replay started (the snapshot's position or `--from`).
    pub start: String,
    /// Events applied (or written).
    pub events: u64,
    /// Transactions applied.
    pub transactions: u64,
    /// Segments read and verified.
    pub segments_verified: u64,
    /// Position and commit time (ms) of the last applied transaction.
    pub last: Option<(String, i64)>,
    /// Things the operator should know (settings changed and put back, a break in the
    /// chain after the target).
    pub notes: Vec<String>,
    /// Files written, for an export.
    pub written: Vec<String>,
    /// Where they were written.
    pub dir: Option<PathBuf>,
    /// The operator stopped the restore at a transaction boundary: `last` is where the
    /// target stands, and `--resume` continues from there.
    pub interrupted: bool,
}

/// One thing that differs between a restored copy and what a manifest recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// What differs (for MySQL: `schema.table`).
    pub table: String,
    /// What `expected` comes from (a snapshot's manifest, the replica).
    pub expected_from: String,
    /// What that recorded or holds.
    pub expected: String,
    /// What the scratch server holds.
    pub found: String,
}

/// What a restore drill did and found.
#[derive(Debug, Default)]
pub struct DrillReport {
    /// Snapshot loaded first (empty when none was).
    pub base: String,
    /// What the restored copy was compared with: a newer snapshot's manifest, the live
    /// replica (one line each).
    pub checked_against: Vec<String>,
    /// How many things were compared.
    pub compared: usize,
    /// What they are ("tables").
    pub compared_what: &'static str,
    /// Things that differ.
    pub differences: Vec<Difference>,
    /// Events replayed in all.
    pub events: u64,
    /// Position of the last replayed transaction.
    pub last_position: Option<String>,
    /// Why nothing could be compared, when nothing was: the drill then proved nothing.
    pub not_proven: Option<String>,
}

impl DrillReport {
    /// What the drill proved.
    pub fn verdict(&self) -> Verdict {
        match &self.not_proven {
            Some(why) => Verdict::NotProven(why.clone()),
            None if self.compared == 0 => Verdict::NotProven(format!(
                "nothing was compared: the restored copy and what it was checked against hold no {}",
                self.compared_what
            )),
            None if self.differences.is_empty() => Verdict::Passed,
            None => Verdict::Failed(format!(
                "{} of the {} {} differ",
                self.differences.len(),
                self.compared,
                self.compared_what
            )),
        }
    }
}

/// Makes the progress bars of a command's phases (hidden for callers that print nothing).
#[derive(Debug, Clone, Copy)]
pub struct Bars {
    visible: bool,
}

impl Bars {
    /// Bars drawn on stderr.
    pub fn visible() -> Self {
        Bars { visible: true }
    }

    /// Bars that draw nothing.
    pub fn hidden() -> Self {
        Bars { visible: false }
    }

    /// A bar for one phase (`what`) of `total` bytes.
    pub fn phase(&self, what: &str, total: u64) -> ProgressBar {
        if !self.visible {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(total);
        if let Ok(style) = ProgressStyle::with_template(&format!(
            "{what} {{bar:30}} {{bytes}}/{{total_bytes}} {{bytes_per_sec}} eta {{eta}} {{msg}}"
        )) {
            bar.set_style(style);
        }
        bar
    }
}

/// A stored segment's payload, decoded and checked against its trailer, then opened with
/// its key (the tag checks payload and header) or, in clear, against its sha256. Hashing,
/// decryption and decompression run off the runtime's threads.
pub(crate) async fn segment_payload(store: &Store, seg: &SegmentRef) -> Result<Vec<u8>> {
    let bytes = store.get(&seg.key).await?;
    let corrupt = |key: String| {
        move |e| {
            ShipperError::Restore(format!(
                "{key} is corrupt: {e}; run logferry-shipper verify"
            ))
        }
    };
    let decoding = corrupt(seg.key.clone());
    let segment = off_runtime(&seg.key, move || {
        Segment::decode(bytes, &DecodeLimits::stored()).map_err(decoding)
    })
    .await?;
    crate::catalog::check_placed(&seg.key, &segment.header).map_err(|detail| {
        ShipperError::Restore(format!(
            "{} is misplaced: {detail}; run logferry-shipper verify",
            seg.key
        ))
    })?;
    let key = store
        .keyring()
        .segment_key(store, &seg.key, &segment.header)
        .await?;
    let opening = corrupt(seg.key.clone());
    off_runtime(&seg.key, move || {
        match &key {
            Some(k) => segment.open(k),
            None => segment.payload(),
        }
        .map_err(opening)
    })
    .await
}

/// The payloads of `segs` (each with its payload size, which its item holds) in order,
/// read ahead as far as the store allows ([`Store::read_ahead`]).
pub(crate) fn segment_payloads<'a>(
    store: &'a Store,
    segs: impl IntoIterator<Item = (&'a SegmentRef, u64)> + 'a,
) -> impl futures::Stream<Item = Held<Result<Vec<u8>>>> + 'a {
    read_ahead(
        segs,
        store.read_ahead(),
        |(seg, plain)| seg.size + plain,
        move |(seg, _)| segment_payload(store, seg),
    )
}

/// Runs CPU-bound checking (hashes, decompression) on a blocking thread; `what` names the
/// object if the check itself dies.
pub(crate) async fn off_runtime<T: Send + 'static>(
    what: &str,
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ShipperError::Internal(format!("the check of {what} died: {e}")))?
}

/// Streams the snapshot's chunks (each verified) into `out`.
///
/// # Errors
/// [`ShipperError::Corrupt`] naming the first chunk that fails its checks (a restore then
/// falls back to an older snapshot); others when a chunk cannot be read or `out` fails.
pub(crate) async fn snapshot_chunks<W>(
    store: &Store,
    m: &SnapshotManifest,
    bar: &ProgressBar,
    out: &mut W,
    what: &str,
) -> Result<()>
where
    W: tokio::io::AsyncWrite + Unpin,
{
    // The manifest's MAC is checked before any chunk is read: a snapshot no key holder
    // wrote is never loaded (a restore falls back to an older one, as for a corrupt chunk).
    let epoch = store
        .keyring()
        .manifest_key(store, &manifest_key(&m.stream, &m.id), m)
        .await?;
    let mut chunks = Box::pin(read_ahead(
        m.chunks.iter().cloned(),
        store.read_ahead(),
        |c| c.stored_bytes + c.plain_bytes,
        |c| {
            let epoch = epoch.clone();
            async move {
                let key = chunk_key(&m.stream, &m.id, c.index);
                let stored = store.get(&key).await?;
                let id = m.id.clone();
                off_runtime(&key.clone(), move || {
                    let sealing = epoch
                        .as_deref()
                        .map(|key| ChunkSealing { key, snapshot: &id });
                    open_chunk(&stored, &c, sealing.as_ref())
                        .map_err(|source| ShipperError::Corrupt { key, source })
                })
                .await
            }
        },
    ));
    while let Some(plain) = chunks.next().await {
        let plain = plain.ok()?;
        out.write_all(&plain)
            .await
            .map_err(|e| ShipperError::Restore(format!("{what}: {e}")))?;
        bar.inc(plain.len() as u64);
    }
    Ok(())
}

/// The error of a failed write into the export directory `dir`.
pub(crate) fn write_error(dir: &Path) -> impl Fn(std::io::Error) -> ShipperError + '_ {
    move |e| ShipperError::Restore(format!("writing into {}: {e}", dir.display()))
}

/// Elapsed time in a short human form.
pub fn elapsed(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

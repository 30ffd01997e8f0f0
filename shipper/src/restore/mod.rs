//! Point-in-time restore and export, from the object store alone (no shipper running).
//!
//! 1. [`plan`] ([`plan.rs`](plan)): the newest complete snapshot at or before the target,
//!    and the stored segments that follow its primary position, checked to run unbroken to
//!    the target.
//! 2. [`load_snapshot`] loads the snapshot into the target server ([`export_snapshot`]
//!    writes it to a directory instead).
//! 3. [`collect`] ([`collect.rs`](collect)): the events after the snapshot's position up to
//!    the last transaction that ends at or before the target, whole transactions only,
//!    rebuilt as binlog file pieces and handed on segment by segment as each is verified;
//!    [`crate::replay`] streams them into the server through the stock
//!    `mariadb-binlog | mariadb`, or into files.

mod collect;
mod plan;
mod target;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use indicatif::ProgressBar;
use logferry_common::snapshot::{chunk_key, open_chunk, SnapshotManifest};
use logferry_common::{DecodeLimits, Segment};
use tokio::io::AsyncWriteExt;

use crate::catalog::SegmentRef;
use crate::error::{Result, ShipperError};
use crate::storage::Store;
use crate::target_server::{TargetServer, Tool};

pub use collect::{collect, Collected};
pub use plan::{chain, plan, plan_from, ChainSegment, Plan};
pub use target::{Gtid, Target};

/// A stored segment's payload, decoded and checked against both its checksums (hashing
/// and decompression run off the runtime's threads).
async fn segment_payload(store: &Store, seg: &SegmentRef) -> Result<Vec<u8>> {
    let bytes = store.get(&seg.key).await?;
    let key = seg.key.clone();
    tokio::task::spawn_blocking(move || {
        let corrupt = |e| {
            ShipperError::Restore(format!(
                "{key} is corrupt: {e}; run logferry-shipper verify"
            ))
        };
        let segment = Segment::decode(bytes, &DecodeLimits::stored()).map_err(corrupt)?;
        segment.payload().map_err(corrupt)
    })
    .await
    .map_err(|e| ShipperError::Restore(format!("the segment check failed: {e}")))?
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
    let client = Tool::watch(child);
    let fed = snapshot_chunks(store, m, bar, &mut stdin, "loading the snapshot").await;
    drop(stdin);
    client.finish("loading the snapshot with mariadb").await?;
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
    let packet = crate::target_server::REPLAY_MAX_PACKET;
    let mut howto = format!(
        "# Restore by hand with the stock clients.\n\
         # mariadb-binlog replays each statement's rows as one BINLOG statement, so a bulk\n\
         # statement needs a large packet limit on the server (new sessions) and the client:\n\
         mariadb --host=HOST --user=USER -p -e 'SET GLOBAL max_allowed_packet = {packet}'\n"
    );
    if let Some(m) = &plan.snapshot {
        howto.push_str(&format!(
            "mariadb --host=HOST --user=USER -p --max-allowed-packet={packet} < snapshot-{}.sql\n",
            m.id
        ));
    }
    if !collected.files.is_empty() {
        // One file per invocation: the first file may start mid-file without the GTID list
        // that mariadb-binlog's multi-file GTID check expects (or use --skip-gtid-strict-mode).
        howto.push_str(&format!(
            "for f in {}; do mariadb-binlog \"$f\" | mariadb --host=HOST --user=USER -p --max-allowed-packet={packet} || break; done\n",
            collected.files.join(" ")
        ));
    }
    howto.push_str("# then put max_allowed_packet back to its previous value\n");
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

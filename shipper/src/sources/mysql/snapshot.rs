//! A MySQL snapshot (a `mariadb-dump` script, in verified chunks) loaded into the target
//! server or written to a directory, and the `RESTORE.txt` that says how to apply an
//! export with the stock clients.

use std::path::Path;
use std::process::Stdio;

use indicatif::ProgressBar;

use super::collect::Collected;
use super::plan::Plan;
use super::target_server::{TargetServer, Tool, REPLAY_MAX_PACKET};
use crate::error::{Result, ShipperError};
use crate::restore::{snapshot_chunks, write_error};
use crate::storage::Store;

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
    let packet = REPLAY_MAX_PACKET;
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
